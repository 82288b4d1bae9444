"""``weijian demo`` and its tools: local services, the SMS inbox, the process supervisor.

None of this is needed to run weijian in production; it needs the ``demo`` extra (``rich``)
for the console, and the test suite uses the local services (Mosquitto, InfluxDB on free
ports) and the supervisor.
"""
