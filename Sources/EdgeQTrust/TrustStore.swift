import Crypto
import Foundation

/// A public key the gateway trusts, with the role it is trusted for.
public struct TrustedKey: Sendable {
    /// The key's name (the file stem of `<role>/<name>.pub`), carried in commands and signatures.
    public let name: String
    /// What the key may sign.
    public let role: KeyRole
    /// The Ed25519 public key's 32 raw bytes (kept as bytes: swift-crypto's key type is not
    /// `Sendable` on Linux).
    public let rawPublicKey: [UInt8]
    /// Where it was read from (empty for the device key and keys made in memory).
    public let file: String

    /// A trusted key.
    public init(name: String, role: KeyRole, publicKey: Curve25519.Signing.PublicKey, file: String = "") {
        self.name = name
        self.role = role
        self.rawPublicKey = Array(publicKey.rawRepresentation)
        self.file = file
    }

    init(name: String, role: KeyRole, rawPublicKey: [UInt8], file: String) {
        self.name = name
        self.role = role
        self.rawPublicKey = rawPublicKey
        self.file = file
    }

    /// The Ed25519 public key.
    public var publicKey: Curve25519.Signing.PublicKey? { try? Curve25519.Signing.PublicKey(rawRepresentation: rawPublicKey) }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    public func isValidSignature(_ signature: some DataProtocol, for message: some DataProtocol) -> Bool {
        guard let key = publicKey else { return false }
        return key.isValidSignature(signature, for: message)
    }
}

/// The keys a gateway trusts, read from `<data>/keys/<role>/<name>.pub` for the roles
/// `operator` (every command verb), `trainer` (`retrain` only) and `models` (model
/// signatures), plus the device's own key for the models it signs itself.
///
/// A command key name is unique across `operator` and `trainer`; `models` is its own name
/// space. Immutable: a gateway reads it at start (restart to add or remove a key).
public struct TrustStore: Sendable {
    /// Command keys (operator and trainer) by name.
    let commandKeys: [String: TrustedKey]
    /// Model keys by name (the device key as `device`).
    let modelKeys: [String: TrustedKey]
    /// Files found under `keys/` and not used, each with why (log them at start).
    public let warnings: [String]

    /// A store of exactly these keys (tests, tools). A later key of the same name and name
    /// space replaces an earlier one.
    public init(keys: [TrustedKey]) {
        var c: [String: TrustedKey] = [:], m: [String: TrustedKey] = [:]
        for k in keys {
            if k.role == .models { m[k.name] = k } else { c[k.name] = k }
        }
        commandKeys = c
        modelKeys = m
        warnings = []
    }

    init(commandKeys: [String: TrustedKey], modelKeys: [String: TrustedKey], warnings: [String]) {
        self.commandKeys = commandKeys
        self.modelKeys = modelKeys
        self.warnings = warnings
    }

    /// The folder holding the role folders: `<data>/keys`.
    public static func keysDirectory(dataDirectory: URL) -> URL { dataDirectory.appendingPathComponent("keys") }

    /// Reads every `<data>/keys/<role>/<name>.pub`. A missing `keys` folder or role folder
    /// means no key of that role. Other files are skipped with a warning; a private key found
    /// there is an error (it does not belong on the gateway).
    ///
    /// - Throws: `KeyFileError` for a malformed public key file, an invalid or reserved key
    ///   name, a name trusted as both operator and trainer, a private key (`.key`, PEM
    ///   `PRIVATE KEY`) in a role folder, or a role folder that cannot be listed.
    public static func load(dataDirectory: URL) throws(KeyFileError) -> TrustStore {
        let root = keysDirectory(dataDirectory: dataDirectory)
        var commandKeys: [String: TrustedKey] = [:], modelKeys: [String: TrustedKey] = [:]
        var warnings: [String] = []
        for role in KeyRole.allCases {
            let dir = root.appendingPathComponent(role.rawValue)
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir) else { continue }
            guard isDir.boolValue else {
                throw KeyFileError(path: dir.path, problem: "a file where the folder of \(role) keys belongs", remedy: "make it a folder holding NAME.pub files")
            }
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            } catch {
                throw KeyFileError(path: dir.path, problem: "cannot list the folder (\(error.localizedDescription))", remedy: "check its permissions")
            }
            for file in names {
                let url = dir.appendingPathComponent(file)
                if file.hasSuffix(".key") {
                    throw KeyFileError(path: url.path, problem: "a private key in the folder of trusted keys",
                                       remedy: "move it off the gateway (keep it with its owner) and put only NAME.pub here")
                }
                guard file.hasSuffix(".pub") else {
                    if !file.hasPrefix(".") { warnings.append("\(url.path): skipped: only NAME.pub files are read here") }
                    continue
                }
                let name = String(file.dropLast(4))
                if let p = KeyName.problem(name) {
                    throw KeyFileError(path: url.path, problem: p, remedy: "rename the file to NAME.pub with a valid name")
                }
                if KeyName.reserved.contains(name) {
                    throw KeyFileError(path: url.path, problem: "'\(name)' is a reserved key name",
                                       remedy: "rename the file (reserved: \(KeyName.reserved.sorted().joined(separator: ", ")))")
                }
                let key = TrustedKey(name: name, role: role, publicKey: try KeyFile.readPublicKey(url), file: url.path)
                if role == .models {
                    modelKeys[name] = key
                } else {
                    if let other = commandKeys[name] {
                        throw KeyFileError(path: url.path, problem: "the name '\(name)' is also trusted as \(other.role) (\(other.file))",
                                           remedy: "a command key has one role: remove one of the two files")
                    }
                    commandKeys[name] = key
                }
            }
        }
        return TrustStore(commandKeys: commandKeys, modelKeys: modelKeys, warnings: warnings)
    }

    /// This store plus the device's own key, trusted for the models it signs (name `device`).
    public func adding(_ device: DeviceKey) -> TrustStore {
        var m = modelKeys
        m[DeviceKey.name] = TrustedKey(name: DeviceKey.name, role: .models, rawPublicKey: device.rawPublicKey, file: device.file.path)
        return TrustStore(commandKeys: commandKeys, modelKeys: m, warnings: warnings)
    }

    /// The command key (operator or trainer) named `name`.
    public func commandKey(named name: String) -> TrustedKey? { commandKeys[name] }

    /// The model-signing key named `name` (`device` for the device key, when added).
    public func modelKey(named name: String) -> TrustedKey? { modelKeys[name] }

    /// Every trusted key, command keys first, each group sorted by name.
    public var keys: [TrustedKey] {
        commandKeys.values.sorted { $0.name < $1.name } + modelKeys.values.sorted { $0.name < $1.name }
    }

    /// Whether any key may sign commands (operator or trainer).
    public var hasCommandKeys: Bool { !commandKeys.isEmpty }
}
