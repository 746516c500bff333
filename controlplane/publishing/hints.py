"""The names of the hint groups and message types: what ``notify`` sends and what
``localhints`` accepts from other processes."""

# The data-plane sync consumers listen here (and the dashboard's live views too).
DATAPLANE_GROUP = "switchyard.dataplane"
CONFIG_CHANGED = "config.changed"    # handled by DataPlaneConsumer.config_changed
HEALTH_CHANGED = "health.changed"    # handled by DataPlaneConsumer.health_changed

# Dashboard live views (/ws/live/) listen here; hints only, harmless when nobody listens.
LIVE_GROUP = "switchyard.live"
TRAFFIC_UPDATED = "traffic.updated"  # a node's traffic report was stored
