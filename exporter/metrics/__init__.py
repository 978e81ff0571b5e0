"""``/metrics``: the catalogue of every family, the model's cached exposition and the collectors."""
