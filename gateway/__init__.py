"""gateway owns the edge: it polls Modbus devices, stores every reading durably and publishes it to MQTT."""
