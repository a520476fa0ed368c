// libmosquitto for the EdgeQMQTT module (the only importer).
// mqtt_protocol.h brings the MQTT 5 constants (MQTT_PROTOCOL_V5, property ids).
#include <mosquitto.h>
#include <mqtt_protocol.h>
