"""The plugin host (and, later, the marketplace): loads plugins from the ``guiju`` entry-point group."""
