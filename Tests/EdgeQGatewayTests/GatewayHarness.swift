import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Testing

/// A small test plant's mapping: two signals from one JSON message (`step`, `x`, `y`), a
/// trigger tick, two actions whose payload carries the step, an incumbent on the command topic.
func testMapping(tick: String = "trigger: plant/t/state", maxAge: String = "", fallback: String = "a0", extraLearning: String = "") -> String {
    """
    gateway:
      id: t1
      mode: shadow
    signals:
      - {name: step, topic: plant/t/state, json: step}
      - {name: x, topic: plant/t/state, json: x, range: [-10, 10]\(maxAge)}
      - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}
    state:
      features:
        - {signal: x, normalize: [-10, 10]}
        - {signal: y, normalize: [-10, 10]}
    tick:
      \(tick)
    reward: -abs(x)
    actions:
      fallback: \(fallback)
      list:
        - name: a0
          publish: {topic: plant/t/cmd, payload: '{"a":{{value}},"step":{{step}}}', value: 0}
        - name: a1
          publish: {topic: plant/t/cmd, payload: '{"a":{{value}},"step":{{step}}}', value: 1}
    incumbent:
      topic: plant/t/cmd
      json: a
    safety:
      ood_margin: none
    learning:
      hidden: [16, 16]
      retrain: {every_transitions: 1000000}
    \(extraLearning)
    """
}

/// `extraLearning` for tests that start in control with a model and are about what the
/// gateway publishes, not about the control-group guard: `control_share: 0` turns the guard off,
/// so no block goes back to the incumbent (with the default share a random control block of
/// the incumbent, during which the gateway publishes nothing, may come first).
let noControlGroup = "  promotion: {control_share: 0}"

/// A random (untrained) model that fits `map`, written to its data directory's store (signed
/// with the data directory's device key, as the gateway signs what it trains) and made
/// current, as a promotion would.
@discardableResult
func installModel(for map: TopicMap, in data: URL, seed: UInt64 = 7, tieMargin: Float? = nil, support: StateSupport? = nil) throws -> Int {
    let arch = Architecture(inputCount: map.stateWidth, hidden: [16, 16], actionCount: map.actions.count)
    let net = try MLP(arch, seed: seed)
    var rng = SystemRandomNumberGenerator()
    let calibration = (0..<(map.stateWidth * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
    var model = try QModel(network: net, actionNames: map.actions.map(\.name), normalization: .identity(map.stateWidth),
                           calibrationStates: calibration)
    if let tieMargin { model.int8.tieMargin = tieMargin }
    model.support = support
    let file = data.appendingPathComponent("incoming.safetensors")
    try model.save(to: file)
    let store = try ModelStore(dataDirectory: data)
    let v = try store.add(files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
                          report: Data(#"{"verdict":"passed"}"#.utf8), signer: try ModelSigner.device(dataDirectory: data, map: map))
    try store.setCurrent(v, reason: "test")
    return v
}

/// A gateway running in-process on its own thread against a real broker, and an observer
/// client subscribed to everything.
final class GatewayHarness: @unchecked Sendable {
    // @unchecked Sendable: all properties are set in init and never reassigned; the
    // gateway, client and broker are themselves thread-safe.
    let broker: MosquittoBroker
    let dir: TempDir
    let map: TopicMap
    let gateway: Gateway
    let observer: MQTTClient
    let thread: Thread
    let done = DispatchSemaphore(value: 0)
    /// The test operator's private key (`tester`): its public half is trusted in the gateway's
    /// `keys/operator/`, so `ask` and `command` send signed commands as `edgeq cmd` does.
    let operatorKey: SigningPrivateKey
    static let operatorName = "tester"

    /// `tieMargin` replaces the installed model's measured one (`withModel` only).
    /// `logger`: the gateway's logger (a test may pass one with its own handler).
    init(yaml: String, mode: GatewayMode? = nil, withModel: Bool = false, tieMargin: Float? = nil, support: StateSupport? = nil,
         broker existing: MosquittoBroker? = nil,
         logger: Logger = Logger(label: "edgeq.gateway"), configure: (inout GatewayOptions) -> Void = { _ in }) throws {
        broker = try existing ?? MosquittoBroker()
        dir = try TempDir()
        map = try TopicMap.parse(yaml: yaml, file: "test.yaml")
        if withModel { try installModel(for: map, in: dir.url, tieMargin: tieMargin, support: support) }
        var o = GatewayOptions(map: map)
        o.broker = broker.url
        o.dataDirectory = dir.url.path
        o.mode = mode
        o.statusInterval = 0.5
        configure(&o)
        operatorKey = try installOperatorKey(dataDirectory: URL(fileURLWithPath: o.dataDirectory ?? dir.url.path),
                                             privateFolder: dir.url.appendingPathComponent("operator-key"))
        gateway = try Gateway(o, logger: logger)
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "observer-\(UUID().uuidString.prefix(8))")
        cfg.inboundCapacity = 100_000
        observer = try MQTTClient(cfg)
        try observer.subscribe("#", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 10)
        let g = gateway
        let d = done
        thread = Thread {
            do { try g.run() } catch { Issue.record("gateway.run: \(error)") }
            d.signal()
        }
        thread.start()
        // Wait for the retained status "online".
        _ = try waitFor(topic: "\(map.gateway.prefix)/status", timeout: 10) { String(decoding: $0.payload, as: UTF8.self).contains(#""state":"online""#) }
    }

    private let stopLock = NSLock()
    private var stopped = false

    /// Stops the gateway (as SIGTERM does) and the observer. Idempotent.
    func stop() {
        let first = stopLock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        gateway.stop(wait: false)
        _ = done.wait(timeout: .now() + 30)
        observer.stop()
    }

    deinit { stop() }

    var received: [MQTTMessage] = []

    /// Receives until a message on `topic` satisfies `match`; keeps everything seen in `received`.
    func waitFor(topic: String, timeout: Double = 5, _ match: (MQTTMessage) -> Bool = { _ in true }) throws -> MQTTMessage {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = observer.receive(timeout: 0.05) else { continue }
            received.append(m)
            if m.topic == topic && match(m) { return m }
        }
        throw HarnessError("no message on \(topic) within \(timeout) s; seen: \(received.suffix(5).map { "\($0.topic) \(String(decoding: $0.payload, as: UTF8.self))" })")
    }

    /// Everything that arrives within `seconds`.
    func drain(_ seconds: Double) -> [MQTTMessage] {
        let deadline = Date().addingTimeInterval(seconds)
        var out: [MQTTMessage] = []
        while Date() < deadline {
            if let m = observer.receive(timeout: 0.02) { out.append(m); received.append(m) }
        }
        return out
    }

    /// Sends a control-plane command signed by the test operator and returns the gateway's reply.
    func ask(_ verb: String, _ body: String) throws -> [String: Any] {
        try command(verb, body)
        return GatewayHarness.json(try waitFor(topic: "\(map.gateway.prefix)/reply/\(verb)"))
    }

    /// Publishes `body` (the command object: `id` and the verb's fields) on `<prefix>/cmd/<verb>`,
    /// signed by the test operator.
    func command(_ verb: String, _ body: String) throws {
        _ = try observer.publish(CommandEnvelope.topic(prefix: map.gateway.prefix, verb: verb), signed(verb, body), qos: .atLeastOnce)
    }

    /// `body` signed by the test operator for `verb` of this gateway.
    func signed(_ verb: String, _ body: String) throws -> [UInt8] {
        try CommandEnvelope.sign(command: body, topic: CommandEnvelope.topic(prefix: map.gateway.prefix, verb: verb),
                                 gatewayID: map.gateway.id, keyName: Self.operatorName, privateKey: operatorKey)
    }

    /// Publishes from the observer.
    func send(_ topic: String, _ text: String, qos: QoS = .atLeastOnce) throws {
        _ = try observer.publish(topic, text, qos: qos)
    }

    /// One metric's value from the gateway's Prometheus text (0 when absent).
    func metric(_ line: String) -> Double {
        for l in gateway.renderMetrics().split(separator: "\n") where l.hasPrefix(line + " ") {
            return Double(l.dropFirst(line.count + 1)) ?? 0
        }
        return 0
    }

    /// The JSON object of a message.
    static func json(_ m: MQTTMessage) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
    }
}

/// Generates the test operator key `tester` into `privateFolder` (once) and trusts its public
/// half in `dataDirectory/keys/operator/` (replacing an earlier one of the same name).
func installOperatorKey(dataDirectory: URL, privateFolder: URL) throws -> SigningPrivateKey {
    let name = GatewayHarness.operatorName
    let keyFile = privateFolder.appendingPathComponent("\(name).key")
    if !FileManager.default.fileExists(atPath: keyFile.path) { _ = try KeyFile.generate(name: name, directory: privateFolder) }
    let trusted = TrustStore.keysDirectory(dataDirectory: dataDirectory).appendingPathComponent("operator")
    try FileManager.default.createDirectory(at: trusted, withIntermediateDirectories: true)
    let pub = trusted.appendingPathComponent("\(name).pub")
    try? FileManager.default.removeItem(at: pub)
    try FileManager.default.copyItem(at: privateFolder.appendingPathComponent("\(name).pub"), to: pub)
    return try KeyFile.readPrivateKey(keyFile)
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension GatewayHarness {
    /// Waits for the end of a retraining on `edgeq/t1/retrain` (`phase` done or failed) and
    /// returns that event.
    func retrainResult(timeout: Double = 60) throws -> [String: Any] {
        let m = try waitFor(topic: "edgeq/t1/retrain", timeout: timeout) {
            let phase = GatewayHarness.json($0)["phase"] as? String
            return phase == "done" || phase == "failed"
        }
        return GatewayHarness.json(m)
    }

    /// The first guard event (`phase` guard) on `edgeq/t1/retrain` seen so far.
    func firstGuardEvent() -> [String: Any]? {
        received.lazy.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json).first { $0["phase"] as? String == "guard" }
    }

    /// A model favouring a0 (seed 1) and one favouring a1 (seed 2) stored, the a0 one served
    /// and then the a1 one — its control group the a0 one —, control mode: (good, bad) on a
    /// plant where a1 is the bad action.
    func serveABadModelAfterAGoodOne() throws -> (good: Int, bad: Int) {
        let good = try storeModel(favouring: 0, for: map, in: dir.url, seed: 1)
        let bad = try storeModel(favouring: 1, for: map, in: dir.url, seed: 2)
        #expect(try ask("promote", "{\"version\":\(good)}")["ok"] as? Bool == true)
        #expect(try ask("promote", "{\"version\":\(bad)}")["ok"] as? Bool == true)
        #expect(try ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        return (good, bad)
    }
}
