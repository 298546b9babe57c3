"""miajax: membership inference attacks and defences in JAX."""

__version__ = "0.1.0"
