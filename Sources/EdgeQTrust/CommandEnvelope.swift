import Crypto
import EdgeQCore
import Foundation

/// The signed command envelope (docs/security.md, "Signed commands").
///
/// A signed command's payload on `<prefix>/cmd/<verb>` is a JSON object:
/// ```
/// {"cmd":"{\"id\":\"7\",\"mode\":\"control\"}",
///  "auth":{"key":"alice","ts_ms":1764700000123,"nonce":"q0f…==","sig":"…=="}}
/// ```
/// `cmd` is the command itself (the same JSON object an unsigned gateway takes: `id` and the
/// verb's fields) carried **as a string**, so that the signature covers its exact bytes and no
/// canonical JSON has to be agreed between languages. The signature is Ed25519 over the UTF-8
/// bytes of
/// ```
/// edgeq-cmd-v1 \n <gateway id> \n <topic> \n <ts_ms> \n <nonce> \n <key> \n <cmd>
/// ```
/// (joined by single `\n`, no spaces, nothing after `cmd`). `ts_ms` is milliseconds since the
/// Unix epoch, a JSON integer, written in the signed text as its decimal digits; `nonce` is
/// standard base64 of 16 random bytes; `key` is the signing key's name; `sig` is standard
/// base64 of the 64-byte signature. The gateway id and the topic (hence the verb) come from
/// the receiving gateway, so a command signed for another gateway or verb does not verify.
public enum CommandEnvelope {
    /// The first line of the signed text: the envelope's version.
    public static let version = "edgeq-cmd-v1"

    /// The bytes the signature covers.
    public static func signedBytes(gatewayID: String, topic: String, timestampMs: Int64, nonce: String, key: String, command: String) -> [UInt8] {
        Array([version, gatewayID, topic, String(timestampMs), nonce, key, command].joined(separator: "\n").utf8)
    }

    /// The command topic of `verb` under `prefix`: `<prefix>/cmd/<verb>`.
    public static func topic(prefix: String, verb: String) -> String { "\(prefix)/cmd/\(verb)" }

    /// A fresh nonce: standard base64 of 16 random bytes (the system's random source).
    public static func makeNonce() -> String {
        var g = SystemRandomNumberGenerator()
        return Data((0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }).base64EncodedString()
    }

    /// The current time in milliseconds since the Unix epoch.
    public static func nowMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    /// Signs `command` (a JSON object's text: `id` and the verb's fields) for `topic` on the
    /// gateway `gatewayID` and returns the payload to publish.
    ///
    /// - Parameters:
    ///   - timestampMs: the signing time (default now); the gateway refuses one outside its window.
    ///   - nonce: a fresh random nonce (default `makeNonce()`); never reuse one.
    /// - Throws: `KeyFileError` (no file) when the key name is invalid; signing itself does not fail.
    public static func sign(command: String, topic: String, gatewayID: String, keyName: String,
                            privateKey: Curve25519.Signing.PrivateKey,
                            timestampMs: Int64 = nowMs(), nonce: String = makeNonce()) throws(KeyFileError) -> [UInt8] {
        if let p = KeyName.problem(keyName) {
            throw KeyFileError(path: keyName, problem: p, remedy: "name the key file NAME.key with a valid name")
        }
        let message = signedBytes(gatewayID: gatewayID, topic: topic, timestampMs: timestampMs, nonce: nonce, key: keyName, command: command)
        let signature: Data
        do {
            signature = try privateKey.signature(for: message)
        } catch {
            // BoringSSL's Ed25519 signing has no failure path for a valid key; keep the error typed.
            throw KeyFileError(path: keyName, problem: "signing failed (\(error))", remedy: "generate a new key with `edgeq keys generate`")
        }
        let text = "{\"cmd\":\(jsonString(command)),\"auth\":{\"key\":\(jsonString(keyName)),\"ts_ms\":\(timestampMs),\"nonce\":\(jsonString(nonce)),\"sig\":\(jsonString(signature.base64EncodedString()))}}"
        return Array(text.utf8)
    }
}

