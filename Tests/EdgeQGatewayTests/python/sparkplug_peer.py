#!/usr/bin/env python3
"""An independent Sparkplug B peer for EdgeQ's tests, built on pysparkplug (PyPI).

host: a host application watching EdgeQ's own edge node (see `Host`).

node: a plant's edge node `--node` in group `--group` with one device `--device`. It publishes
      NBIRTH (bdSeq, Node/Ambient) and DBIRTH (Supply/Temperature Double, Burner/Stage Int32,
      Mode String), each metric with an alias; its NDEATH is its MQTT Will. It answers
      NCMD `Node Control/Rebirth` with new births and DCMD writes with a DDATA echo. The test
      steers it with JSON on the plain topic `--control`:
        {"op": "ddata", "values": {"Supply/Temperature": 21.5}, "by": "alias"|"name"}
        {"op": "ddata_unknown_alias"}   a DDATA whose alias no birth announced
        {"op": "ddeath"} / {"op": "dbirth"} / {"op": "exit"}
      Events are printed one per line (flushed): `ready`, `births <n>`, `rebirth_request`,
      `dcmd <metric> <value>`, `ncmd <metric> <value>`, `sent <op>`.
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as paho
import pysparkplug as spb


def emit(*words):
    print(" ".join(str(w) for w in words), flush=True)


class Node:
    def __init__(self, args):
        self.args = args
        self.group, self.node, self.device = args.group, args.node, args.device
        self.seq = 0
        self.bd_seq = 0
        self.births = 0
        self.lock = threading.Lock()
        self.values = {"Supply/Temperature": 20.0, "Burner/Stage": 0, "Mode": "auto"}
        self.aliases = {"Supply/Temperature": 10, "Burner/Stage": 11, "Mode": 12}
        self.types = {"Supply/Temperature": spb.DataType.DOUBLE, "Burner/Stage": spb.DataType.INT32, "Mode": spb.DataType.STRING}
        self.client = spb.Client(client_id=f"peer-node-{self.node}")
        self.client.set_will(self.death_message())
        self.done = threading.Event()

    def next_seq(self):
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    def topic(self, kind, device=None):
        return spb.Topic(message_type=kind, group_id=self.group, edge_node_id=self.node, device_id=device)

    def death_message(self):
        bd = spb.Metric(timestamp=spb.get_current_timestamp(), name="bdSeq", datatype=spb.DataType.UINT64, value=self.bd_seq)
        return spb.Message(topic=self.topic(spb.MessageType.NDEATH),
                           payload=spb.NDeath(timestamp=spb.get_current_timestamp(), bd_seq_metric=bd),
                           qos=spb.QoS.AT_MOST_ONCE, retain=False)

    def device_metric(self, name, by="name", with_value=True):
        return spb.Metric(timestamp=spb.get_current_timestamp(), name=name if by == "name" else None,
                          alias=self.aliases[name], datatype=self.types[name],
                          value=self.values[name] if with_value else None)

    def publish(self, kind, payload, device=None, dtypes=False):
        self.client.publish(spb.Message(topic=self.topic(kind, device), payload=payload,
                                        qos=spb.QoS.AT_MOST_ONCE, retain=False), include_dtypes=dtypes)

    def births_now(self):
        with self.lock:
            self.seq = 0
            now = spb.get_current_timestamp()
            node_metrics = (
                spb.Metric(timestamp=now, name="bdSeq", datatype=spb.DataType.UINT64, value=self.bd_seq),
                spb.Metric(timestamp=now, name="Node Control/Rebirth", datatype=spb.DataType.BOOLEAN, value=False),
                spb.Metric(timestamp=now, name="Node/Ambient", alias=1, datatype=spb.DataType.DOUBLE, value=7.25),
            )
            self.publish(spb.MessageType.NBIRTH, spb.NBirth(timestamp=now, seq=self.next_seq(), metrics=node_metrics), dtypes=True)
            self.dbirth_locked()
            self.births += 1
        emit("births", self.births)

    def dbirth_locked(self):
        metrics = tuple(self.device_metric(n) for n in self.values)
        self.publish(spb.MessageType.DBIRTH, spb.DBirth(timestamp=spb.get_current_timestamp(), seq=self.next_seq(), metrics=metrics),
                     device=self.device, dtypes=True)

    def ddata_locked(self, values, by):
        metrics = []
        for name, v in values.items():
            self.values[name] = v
            metrics.append(self.device_metric(name, by=by))
        self.publish(spb.MessageType.DDATA, spb.DData(timestamp=spb.get_current_timestamp(), seq=self.next_seq(), metrics=tuple(metrics)),
                     device=self.device)

    def on_command(self, _client, message):
        kind = message.topic.message_type
        for m in message.payload.metrics:
            name = m.name
            if kind == spb.MessageType.NCMD:
                emit("ncmd", name, json.dumps(m.value))
                if name == "Node Control/Rebirth" and m.value:
                    emit("rebirth_request")
                    self.births_now()
            else:
                emit("dcmd", name, json.dumps(m.value), m.datatype.name)
                if name in self.values:
                    with self.lock:
                        self.ddata_locked({name: m.value}, "alias")

    def on_control(self, _c, _u, msg):
        op = json.loads(msg.payload)
        kind = op.get("op")
        with self.lock:
            if kind == "ddata":
                self.ddata_locked(op["values"], op.get("by", "alias"))
            elif kind == "ddata_unknown_alias":
                m = spb.Metric(timestamp=spb.get_current_timestamp(), name=None, alias=999, datatype=spb.DataType.DOUBLE, value=1.0)
                self.publish(spb.MessageType.DDATA, spb.DData(timestamp=spb.get_current_timestamp(), seq=self.next_seq(), metrics=(m,)),
                             device=self.device)
            elif kind == "ddeath":
                self.publish(spb.MessageType.DDEATH, spb.DDeath(timestamp=spb.get_current_timestamp(), seq=self.next_seq()), device=self.device)
            elif kind == "dbirth":
                self.dbirth_locked()
            elif kind == "exit":
                self.done.set()
        emit("sent", kind)

    def run(self):
        connected = threading.Event()
        self.client.connect("127.0.0.1", port=self.args.port, blocking=False, callback=lambda _c: connected.set())
        if not connected.wait(10):
            emit("error", "could not connect to the broker")
            return 1
        self.client.subscribe(self.topic(spb.MessageType.NCMD), spb.QoS.AT_LEAST_ONCE, self.on_command)
        self.client.subscribe(self.topic(spb.MessageType.DCMD, self.device), spb.QoS.AT_LEAST_ONCE, self.on_command)
        control = paho.Client(client_id=f"peer-control-{self.node}")   # paho-mqtt 1.x (pysparkplug pins < 2)
        control.on_message = self.on_control
        control.on_connect = lambda c, *_: c.subscribe(self.args.control, qos=1)
        control.connect("127.0.0.1", self.args.port)
        control.loop_start()
        time.sleep(0.3)   # let both subscriptions settle before the births
        self.births_now()
        emit("ready")
        self.done.wait(self.args.seconds)
        control.loop_stop()
        self.client.disconnect()
        return 0


class Host:
    """A host application watching edge node `--node` (EdgeQ): prints each NBIRTH, NDATA and NDEATH
    as `<type> <JSON of metric name → value>` (NDATA's aliases resolved through the birth by
    pysparkplug); `{"op": "rebirth"}` on `--control` sends NCMD Node Control/Rebirth."""

    def __init__(self, args):
        self.args = args
        self.client = spb.Client(client_id=f"peer-host-{args.node}")
        self.done = threading.Event()

    def on_message(self, _client, message):
        kind = message.topic.message_type
        if kind == spb.MessageType.NDEATH:
            metrics = [message.payload.bd_seq_metric]
        else:
            metrics = message.payload.metrics
        values = {m.name: m.value for m in metrics}
        extra = {}
        if hasattr(message.payload, "seq"):
            extra["seq"] = message.payload.seq
        emit(kind.name.lower(), json.dumps({"metrics": values, **extra}, sort_keys=True))

    def on_control(self, _c, _u, msg):
        op = json.loads(msg.payload)
        if op.get("op") == "rebirth":
            m = spb.Metric(timestamp=spb.get_current_timestamp(), name="Node Control/Rebirth", datatype=spb.DataType.BOOLEAN, value=True)
            topic = spb.Topic(message_type=spb.MessageType.NCMD, group_id=self.args.group, edge_node_id=self.args.node)
            self.client.publish(spb.Message(topic=topic, payload=spb.NCmd(timestamp=spb.get_current_timestamp(), metrics=(m,)),
                                            qos=spb.QoS.AT_LEAST_ONCE, retain=False), include_dtypes=True)
        elif op.get("op") == "exit":
            self.done.set()
        emit("sent", op.get("op"))

    def run(self):
        connected = threading.Event()
        self.client.connect("127.0.0.1", port=self.args.port, blocking=False, callback=lambda _c: connected.set())
        if not connected.wait(10):
            emit("error", "could not connect to the broker")
            return 1
        for kind in (spb.MessageType.NBIRTH, spb.MessageType.NDATA, spb.MessageType.NDEATH):
            topic = spb.Topic(message_type=kind, group_id=self.args.group, edge_node_id=self.args.node)
            self.client.subscribe(topic, spb.QoS.AT_LEAST_ONCE, self.on_message)
        control = paho.Client(client_id=f"peer-host-control-{self.args.node}")   # paho-mqtt 1.x
        control.on_message = self.on_control
        control.on_connect = lambda c, *_: c.subscribe(self.args.control, qos=1)
        control.connect("127.0.0.1", self.args.port)
        control.loop_start()
        time.sleep(0.3)
        emit("ready")
        self.done.wait(self.args.seconds)
        control.loop_stop()
        self.client.disconnect()
        return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["node", "host"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--device")
    p.add_argument("--control", required=True)
    p.add_argument("--seconds", type=float, default=120)
    args = p.parse_args()
    if args.role == "host":
        return Host(args).run()
    return Node(args).run()


if __name__ == "__main__":
    sys.exit(main())
