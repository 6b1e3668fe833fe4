"""Operating the platform: health, metrics, and (later) incidents, status page and diagnostics."""
