"""What the events said, in memory: model, task index, task series, histograms, workers, and
the exporter's own health.
"""
