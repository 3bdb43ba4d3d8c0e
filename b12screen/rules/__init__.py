"""Built-in rule plugins, one module per rule family (see ``DEFAULT_PLUGINS``)."""
