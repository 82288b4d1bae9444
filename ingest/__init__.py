"""ingest owns the central intake: validate readings from MQTT, store them in InfluxDB, feed alerts."""
