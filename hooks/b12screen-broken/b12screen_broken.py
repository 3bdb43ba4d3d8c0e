"""b12screen-broken: a deliberately broken plugin. Importing it raises.

It exists to show (and to let CI check) that b12screen reports a plugin that cannot load by name and
keeps running with every other plugin, and that strict mode (``--strict-plugins``,
``B12SCREEN_STRICT_PLUGINS=1``) makes the failure fatal.
"""

raise RuntimeError(
    "b12screen-broken is a deliberately broken example plugin: it raises on import "
    "(uninstall it with: pip uninstall b12screen-broken)"
)
