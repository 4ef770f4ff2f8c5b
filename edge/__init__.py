"""Edge agent: spool, OEE kernels, value methodology, vouchers and MQTT publishing."""
