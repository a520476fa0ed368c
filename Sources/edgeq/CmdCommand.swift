import ArgumentParser
import EdgeQCore
import EdgeQGateway
import EdgeQMQTT
import EdgeQTopicMap
import EdgeQTrust
import Foundation

/// `edgeq cmd VERB --config FILE --key KEYFILE …`: signs a control-plane command, sends it to
/// the running gateway and prints its reply (docs/security.md, docs/operations.md).
struct CmdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cmd",
        abstract: "Sign a command, send it to the gateway, and print the reply.",
        discussion: """
            Builds {"id":…, FIELD:VALUE…} for <prefix>/cmd/VERB of the mapping's gateway, signs it with \
            KEYFILE (Ed25519 over gateway id, topic, time, a fresh nonce, key name and command) and \
            publishes it (QoS 1, not retained) with the mapping's credentials and TLS, or with \
            --username/--password (an operator's own broker credential, docs/security.md "The broker's \
            share"). Waits for the reply with the same id on <prefix>/reply/VERB and prints it.
            Examples: edgeq cmd mode --set mode=control …; edgeq cmd retrain --set steps=2000 …; \
            edgeq cmd rollback --set version=3 ….
            Exit status: 0 when the reply says ok, 1 when it does not, 69 when the broker cannot be \
            reached, 75 when no reply came in time, 65/66 for a bad mapping or key file.
            """
    )

    @Argument(help: "The verb: mode, retrain, promote, rollback.")
    var verb: String
    @Option(help: "The gateway's mapping file (gateway id, prefix, broker, credentials, TLS).")
    var config: String
    @Option(help: "The private key file (NAME.key from `edgeq keys generate NAME`).")
    var key: String
    @Option(help: "The key's name, when it is not the key file's name without .key.")
    var keyName: String?
    @Option(help: "Broker URL instead of the mapping file's.")
    var broker: String?
    @Option(help: "Broker user name instead of the mapping file's (the operator's own, e.g. op-alice); needs --password.")
    var username: String?
    @Option(help: "Broker password for --username: env:VARIABLE or file:/path (never the password itself).")
    var password: String?
    @Option(name: .customLong("set"), help: "A field of the command, FIELD=VALUE (repeatable). VALUE is taken as JSON when it is a JSON number, true, false, null, a quoted string, an array or an object; otherwise as a string.")
    var fields: [String] = []
    @Option(help: "The request id (default: a random one).")
    var id: String?
    @Flag(help: "Print the topic (first line) and the signed payload (second line) without sending.")
    var printOnly = false
    @Option(help: "Seconds to wait for the broker and then for the reply.")
    var timeout: Double = 10

    func validate() throws {
        guard !verb.isEmpty, !verb.contains("/"), !verb.contains("+"), !verb.contains("#") else {
            throw ValidationError("the verb '\(verb)' cannot be part of a topic")
        }
        for f in fields where !f.contains("=") || f.hasPrefix("=") {
            throw ValidationError("--set '\(f)': write FIELD=VALUE")
        }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        guard (username == nil) == (password == nil) else {
            throw ValidationError("give --username and --password together (the operator's broker credential), or neither (the mapping's)")
        }
        if let password, !password.hasPrefix("env:"), !password.hasPrefix("file:") {
            throw ValidationError("--password takes env:VARIABLE or file:/path, never the password itself")
        }
    }

    /// The command object's JSON text: the id first, then the fields in the order given.
    static func commandText(id: String, fields: [String]) throws -> String {
        var parts = ["\"id\":" + jsonLiteral(id)]
        var seen: Set<String> = ["id"]
        for f in fields {
            guard let eq = f.firstIndex(of: "=") else { continue }
            let name = String(f[..<eq]), value = String(f[f.index(after: eq)...])
            guard seen.insert(name).inserted else { throw ValidationError("--set \(name) is given twice (or sets the id: use --id)") }
            let isJSON = (try? JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed])) != nil
            parts.append(jsonLiteral(name) + ":" + (isJSON ? value : jsonLiteral(value)))
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// A JSON string literal.
    static func jsonLiteral(_ s: String) -> String { jsonString(s) }

    func run() throws {
        let map = try loadMapping(config)
        let keyURL = URL(fileURLWithPath: key)
        let name = keyName ?? keyURL.deletingPathExtension().lastPathComponent
        let privateKey: SigningPrivateKey
        do {
            privateKey = try KeyFile.readPrivateKey(keyURL)
        } catch {
            FileHandle.standardError.write(Data("edgeq cmd: \(error)\n".utf8))
            throw ExitCode(66)
        }
        if let p = KeyName.problem(name) { throw ValidationError("key name: \(p) (give --key-name NAME)") }
        let requestID = id ?? "cli-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let command = try Self.commandText(id: requestID, fields: fields)
        let topic = CommandEnvelope.topic(prefix: map.gateway.prefix, verb: verb)

        if printOnly {
            let payload = try CommandEnvelope.sign(command: command, topic: topic, gatewayID: map.gateway.id, keyName: name, privateKey: privateKey)
            print(topic)
            print(String(decoding: payload, as: UTF8.self))
            return
        }

        var credential: BrokerCredential?
        if let username, let password {
            do {
                credential = BrokerCredential(username: username, password: try Secret(source: password))
            } catch {
                FileHandle.standardError.write(Data("edgeq cmd: --password: \(error)\n".utf8))
                throw ExitCode(66)   // EX_NOINPUT
            }
        }
        let reply = try Self.send(map: map, broker: broker, verb: verb, command: command, requestID: requestID,
                                  keyName: name, privateKey: privateKey, timeout: timeout, credential: credential)
        print(reply.text)
        if !reply.ok { throw ExitCode(1) }
    }

    /// Signs `command` (whose `id` is `requestID`) for `verb`, publishes it to the gateway of
    /// `map` (QoS 1, not retained, the mapping's credentials and TLS) and waits for its reply.
    /// For every tool that sends commands (`edgeq cmd`, `edgeq models rollback --config`).
    /// `credential`, when given, replaces the mapping's user name and password.
    /// - Returns: the reply's text and whether it says `"ok":true`.
    /// - Throws: `ExitCode(69)` when the broker cannot be reached, `ExitCode(75)` when no reply
    ///   came within `timeout` (each after a message on standard error).
    static func send(map: TopicMap, broker: String?, verb: String, command: String, requestID: String,
                     keyName: String, privateKey: SigningPrivateKey, timeout: Double,
                     credential: BrokerCredential? = nil) throws -> (text: String, ok: Bool) {
        let topic = CommandEnvelope.topic(prefix: map.gateway.prefix, verb: verb)
        let clientID = "edgeq-cmd-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var mqtt = try BrokerConnection.configuration(for: map, broker: broker, clientID: clientID)
        mqtt.session = .clean
        if let credential {
            mqtt.username = credential.username
            mqtt.password = credential.password
        }
        let client = try MQTTClient(mqtt)
        defer { client.stop() }
        client.start()
        do {
            try client.waitUntilConnected(timeout: timeout)
        } catch {
            FileHandle.standardError.write(Data("edgeq: cannot reach the broker \(mqtt.broker): \(error)\n".utf8))
            throw ExitCode(69)   // EX_UNAVAILABLE
        }
        let replyTopic = map.gateway.prefix + "/reply/" + verb
        // Subscribed from this thread after the connection, so the SUBSCRIBE goes out before the
        // command: the reply cannot overtake the subscription.
        try client.subscribe(replyTopic, qos: .atLeastOnce)
        // Signed now, not before connecting: the timestamp is as fresh as it can be.
        let payload = try CommandEnvelope.sign(command: command, topic: topic, gatewayID: map.gateway.id, keyName: keyName, privateKey: privateKey)
        _ = try client.publish(topic, payload, qos: .atLeastOnce, retain: false)

        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = client.receive(timeout: min(0.2, max(0.01, deadline.timeIntervalSinceNow))), m.topic == replyTopic else { continue }
            guard let reply = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any],
                  reply["id"] as? String == requestID else { continue }
            let ok = (reply["ok"] as? NSNumber).map { String(cString: $0.objCType) == "c" && $0.boolValue } ?? false
            return (String(decoding: m.payload, as: UTF8.self), ok)
        }
        FileHandle.standardError.write(Data("edgeq: no reply with id \(requestID) on \(replyTopic) within \(timeout) s (is the gateway running, and is \(map.gateway.prefix) its prefix?)\n".utf8))
        throw ExitCode(75)   // EX_TEMPFAIL
    }
}

/// A broker user name and password that replace the mapping's (an operator's own credential:
/// with the shipped ACL only operators may publish commands, docs/security.md).
struct BrokerCredential {
    /// The user name, e.g. `op-alice`.
    var username: String
    /// The password (never printed).
    var password: Secret
}

/// An operator key of a tool that runs its own gateway (`edgeq demo`, `edgeq bench e2e`):
/// `DATA/<name>/<name>.key` (made when missing), its public half trusted as
/// `DATA/keys/operator/<name>.pub` (replaced), so that the tool's commands are signed as
/// `edgeq cmd` signs them. Call it before the gateway starts (it reads its keys at start).
/// - Throws: `KeyFileError` when the key cannot be made or read; a file system error when the
///   public key cannot be copied.
func localOperatorKey(name: String, dataDirectory: URL) throws -> SigningPrivateKey {
    let folder = dataDirectory.appendingPathComponent(name)
    let keyFile = folder.appendingPathComponent("\(name).key")
    if !FileManager.default.fileExists(atPath: keyFile.path) {
        _ = try KeyFile.generate(name: name, directory: folder)
    }
    let trusted = TrustStore.keysDirectory(dataDirectory: dataDirectory).appendingPathComponent("operator")
    try FileManager.default.createDirectory(at: trusted, withIntermediateDirectories: true)
    let installed = trusted.appendingPathComponent("\(name).pub")
    try? FileManager.default.removeItem(at: installed)
    try FileManager.default.copyItem(at: folder.appendingPathComponent("\(name).pub"), to: installed)
    return try KeyFile.readPrivateKey(keyFile)
}
