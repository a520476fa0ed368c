import EdgeQMQTT
import EdgeQTopicMap
import Foundation

/// The broker connection a mapping file describes (URL, credentials by reference, TLS files),
/// used by the gateway itself and by the tools that talk to a running gateway (`edgeq cmd`,
/// `edgeq models rollback --config`), so that they connect exactly as the gateway does.
public enum BrokerConnection {
    /// The MQTT configuration for `map`'s broker (or `broker` instead of the mapping's first
    /// one) with its user name, password and TLS files, under `clientID`. Session, Last Will
    /// and queue sizes are left to the caller.
    /// - Throws: `GatewayError` when a secret cannot be read, or the URL is invalid.
    public static func configuration(for map: TopicMap, broker: String? = nil, clientID: String) throws -> MQTTConfiguration {
        let url = broker ?? map.gateway.brokers.first ?? "mqtt://127.0.0.1:1883"
        do {
            var config = try MQTTConfiguration(url: url, clientID: clientID)
            if let user = map.gateway.username { config.username = try resolveSecret(user) }
            if let pass = map.gateway.password { config.password = Secret(try resolveSecret(pass)) }
            if let tls = map.gateway.tls {
                config.tls = TLSConfiguration(caFile: tls.caFile, certificateFile: tls.certFile, keyFile: tls.keyFile)
            }
            return config
        } catch let e as GatewayError {
            throw e
        } catch {
            throw GatewayError("MQTT: \(error)")
        }
    }

    /// The value of a secret named in the mapping file (an environment variable or a file,
    /// trailing newline removed).
    /// - Throws: `GatewayError` naming the variable or file (never the secret) when it cannot be read.
    public static func resolveSecret(_ ref: SecretReference) throws -> String {
        switch ref {
        case .environment(let name):
            guard let v = ProcessInfo.processInfo.environment[name] else {
                throw GatewayError("the environment variable \(name) named in the mapping file is not set")
            }
            return v
        case .file(let path):
            guard let v = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw GatewayError("cannot read the secret file \(path) named in the mapping file")
            }
            return v.trimmingCharacters(in: .newlines)
        }
    }
}
