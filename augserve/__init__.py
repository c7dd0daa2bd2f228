"""augserve: learned request scheduling for augmented LLM serving."""

from augserve.tuned import register_resolvers

register_resolvers()
