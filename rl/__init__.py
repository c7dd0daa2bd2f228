"""Learned Stage II scheduling: observations, the LearnedStage2 policy base, the gymnasium env.

Importing ``rl`` registers the gymnasium id ``augserve/Scheduling-v0``
(:func:`rl.env.make_default_env`; keyword arguments of ``gymnasium.make`` override its defaults)
when gymnasium is installed.
"""

ENV_ID = "augserve/Scheduling-v0"

try:
    from gymnasium.envs.registration import register, registry
except ImportError:  # serving a trained policy does not need gymnasium
    pass
else:
    if ENV_ID not in registry:
        register(id=ENV_ID, entry_point="rl.env:make_default_env")
