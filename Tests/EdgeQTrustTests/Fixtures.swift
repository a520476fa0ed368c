import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation

/// A data directory with real key files: `alice` (operator), `tom` (trainer), `mo` (models),
/// generated with `KeyFile.generate` into a separate folder (their private halves) and the
/// public halves copied into `<data>/keys/<role>/`.
struct TrustFixture {
    let root: TempDir
    var data: URL { root.url.appendingPathComponent("data") }
    var privateKeys: URL { root.url.appendingPathComponent("private") }
    static let gatewayID = "gw1"
    static let prefix = "edgeq/gw1"

    init() throws {
        root = try TempDir()
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        for (name, role) in [("alice", KeyRole.operator), ("tom", .trainer), ("mo", .models)] {
            try addKey(name, role: role)
        }
    }

    /// Generates `name` and trusts it for `role`.
    func addKey(_ name: String, role: KeyRole) throws {
        let files = try KeyFile.generate(name: name, directory: privateKeys)
        let dir = data.appendingPathComponent("keys/\(role.rawValue)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: files.publicKey, to: dir.appendingPathComponent("\(name).pub"))
    }

    /// Generates `name` without trusting it.
    func untrustedKey(_ name: String) throws -> SigningPrivateKey {
        try KeyFile.readPrivateKey(try KeyFile.generate(name: name, directory: privateKeys).privateKey)
    }

    func privateKey(_ name: String) throws -> SigningPrivateKey {
        try KeyFile.readPrivateKey(privateKeys.appendingPathComponent("\(name).key"))
    }

    func keyFile(_ name: String) -> String { privateKeys.appendingPathComponent("\(name).key").path }
    func publicKeyFile(_ name: String) -> String { privateKeys.appendingPathComponent("\(name).pub").path }

    func trust() throws -> TrustStore { try TrustStore.load(dataDirectory: data) }

    func verifier(_ configuration: CommandVerifier.Configuration = CommandVerifier.Configuration(),
                  clock: TrustClock = .system) throws -> CommandVerifier {
        try CommandVerifier(gatewayID: Self.gatewayID, dataDirectory: data, trust: try trust(), configuration: configuration, clock: clock)
    }

    /// A signed command for `verb` by `key` (default alice), as `edgeq cmd` builds it.
    func signed(_ verb: String, _ command: String, key: String = "alice", keyName: String? = nil,
                gatewayID: String = gatewayID, timestampMs: Int64 = CommandEnvelope.nowMs(),
                nonce: String = CommandEnvelope.makeNonce()) throws -> [UInt8] {
        try CommandEnvelope.sign(command: command, topic: CommandEnvelope.topic(prefix: Self.prefix, verb: verb), gatewayID: gatewayID,
                                 keyName: keyName ?? key, privateKey: try privateKey(key), timestampMs: timestampMs, nonce: nonce)
    }

    static func topic(_ verb: String) -> String { CommandEnvelope.topic(prefix: prefix, verb: verb) }

    /// A small mapping for gateway `gw1` on `broker`.
    static func mappingText(broker: String = "mqtt://127.0.0.1:1883", actions: [String] = ["off", "on"], normalize: String = "[0, 40]") -> String {
        """
        gateway:
          id: gw1
          brokers: [\(broker)]
        signals:
          - {name: temp, topic: plant/temp}
          - {name: power, topic: plant/power}
        state:
          features:
            - {signal: temp, normalize: \(normalize)}
        tick:
          trigger: plant/temp
        reward: -abs(temp - 20) - power
        actions:
          list:
        \(actions.enumerated().map { "    - {name: \($0.element), publish: {topic: plant/cmd, payload: '\($0.offset)'}}" }.joined(separator: "\n"))
        """
    }

    static func mapping(_ text: String = mappingText()) throws -> TopicMap { try TopicMap.parse(yaml: text) }
}

/// The Python helper beside the tests.
enum PythonSigner {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/sign_command.py").path

    static func run(_ arguments: [String]) throws -> (code: Int32, stdout: String, stderr: String) {
        try ChildProcess.run("python3", [script] + arguments, timeout: 60)
    }
}

/// The payload's `auth` and `cmd`, for building altered copies.
func envelope(_ payload: [UInt8]) -> (cmd: String, auth: [String: Any]) {
    let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any] ?? [:]
    return (object["cmd"] as? String ?? "", object["auth"] as? [String: Any] ?? [:])
}

/// A payload from an envelope's parts (JSONSerialization writes it).
func payload(cmd: Any, auth: Any) -> [UInt8] {
    Array((try? JSONSerialization.data(withJSONObject: ["cmd": cmd, "auth": auth])) ?? Data())
}
