import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTrust
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

/// A key of the process tests: generated into `folder` (its private half stays there) and, when
/// `role` is given, trusted by the gateway whose data directory is `data` (`keys/<role>/NAME.pub`).
struct TestKey {
    let name: String
    let keyFile: URL
    let privateKey: SigningPrivateKey

    init(_ name: String, in folder: URL, trustedAs role: KeyRole? = .operator, data: URL) throws {
        self.name = name
        let files = try KeyFile.generate(name: name, directory: folder)
        keyFile = files.privateKey
        privateKey = try KeyFile.readPrivateKey(files.privateKey)
        if let role {
            let dir = TrustStore.keysDirectory(dataDirectory: data).appendingPathComponent(role.rawValue)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: files.publicKey, to: dir.appendingPathComponent("\(name).pub"))
        }
    }

    /// `body` (the command object) signed for `<prefix>/cmd/<verb>` of the gateway `gatewayID`
    /// (prefix `edgeq/<gatewayID>`), as `edgeq cmd` signs it.
    func signed(_ gatewayID: String, _ verb: String, _ body: String, timestampMs: Int64 = CommandEnvelope.nowMs(),
                nonce: String = CommandEnvelope.makeNonce()) throws -> [UInt8] {
        try CommandEnvelope.sign(command: body, topic: CommandEnvelope.topic(prefix: "edgeq/\(gatewayID)", verb: verb),
                                 gatewayID: gatewayID, keyName: name, privateKey: privateKey, timestampMs: timestampMs, nonce: nonce)
    }
}
