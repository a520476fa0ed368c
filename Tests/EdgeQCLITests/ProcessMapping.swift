import EdgeQMQTT
import EdgeQTestSupport
import Foundation

/// The one-signal test plant the process tests run `edgeq run` on: `x` from
/// `plant/<name>/state` (a trigger tick), two actions on `plant/<name>/cmd`, which is also
/// where the incumbent's commands are observed.
func processMapping(id: String, plant: String, learning: String) -> String {
    """
    gateway:
      id: \(id)
      mode: shadow
    signals:
      - {name: step, topic: plant/\(plant)/state, json: step}
      - {name: x, topic: plant/\(plant)/state, json: x, range: [-10, 10]}
    state:
      features:
        - {signal: x, normalize: [-10, 10]}
    tick:
      trigger: plant/\(plant)/state
    reward: -abs(x)
    actions:
      fallback: hold
      list:
        - {name: low, publish: {topic: plant/\(plant)/cmd, payload: '{"a":0}', value: 0}}
        - {name: high, publish: {topic: plant/\(plant)/cmd, payload: '{"a":1}', value: 1}}
    incumbent:
      topic: plant/\(plant)/cmd
      json: a
    learning:
    \(learning)
    """
}

/// A client of the test plant subscribed to `filter`, with room for everything it receives.
func plantClient(_ broker: MosquittoBroker, _ filter: String) throws -> MQTTClient {
    var cfg = try MQTTConfiguration(url: broker.url, clientID: "plant-\(UUID().uuidString.prefix(6))")
    cfg.inboundCapacity = 100_000
    let c = try MQTTClient(cfg)
    try c.subscribe(filter, qos: .atLeastOnce)
    c.start()
    try c.waitUntilConnected(timeout: 10)
    return c
}
