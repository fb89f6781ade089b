"""The five Fruits! services, one package each: ``python -m services.<name>``."""
