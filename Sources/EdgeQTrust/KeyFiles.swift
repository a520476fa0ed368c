#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Foundation

// Ed25519 key files (docs/security.md, "Keys").
//
// Written by EdgeQ: one line of standard base64 (with padding) of the raw 32-byte key and a
// newline, `NAME.key` (the private seed, mode 0600) and `NAME.pub` (the public key). Python's
// `cryptography` reads them with `Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))`
// and `Ed25519PublicKey.from_public_bytes(...)`. Also read: the PEM files of
// `openssl genpkey -algorithm ed25519` (PKCS #8 `PRIVATE KEY`) and `openssl pkey -pubout`
// (`PUBLIC KEY`), recognised by their fixed DER prefix (this is format parsing, not cryptography).

/// An Ed25519 private key (swift-crypto's), for the tools that sign without importing Crypto.
public typealias SigningPrivateKey = Curve25519.Signing.PrivateKey
/// An Ed25519 public key (swift-crypto's).
public typealias SigningPublicKey = Curve25519.Signing.PublicKey

/// A role a key is trusted for: the folder `<data>/keys/<role>/` it is found in.
public enum KeyRole: String, Sendable, CaseIterable, CustomStringConvertible {
    /// May sign every command verb.
    case `operator` = "operator"
    /// May sign `retrain` only.
    case trainer = "trainer"
    /// May sign models (not commands).
    case models = "models"

    /// The folder name (`operator`, `trainer`, `models`).
    public var description: String { rawValue }

    /// Whether a key of this role may sign a command with `verb`.
    public func mayCommand(_ verb: String) -> Bool {
        switch self {
        case .operator: return true
        case .trainer: return verb == "retrain"
        case .models: return false
        }
    }
}

/// A key file that cannot be used: which file, what is wrong, what to do.
/// `description` reads `FILE: what is wrong: what to do`.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    /// The file (or folder) concerned.
    public let path: String
    /// What is wrong with it.
    public let problem: String
    /// What to do about it.
    public let remedy: String

    /// An error about `path`.
    public init(path: String, problem: String, remedy: String) {
        self.path = path
        self.problem = problem
        self.remedy = remedy
    }

    /// `FILE: what is wrong: what to do`.
    public var description: String { "\(path): \(problem): \(remedy)" }
}

/// Key names: file stems of `NAME.pub` / `NAME.key`, also carried in commands and signatures.
public enum KeyName {
    /// Names EdgeQ gives a meaning of its own: `none` (an unsigned command under
    /// `control_plane.auth: none`) and `device` (the gateway's own model-signing key).
    public static let reserved: Set<String> = ["none", "device"]

    /// Why `name` is not a valid key name, or nil: 1–64 characters from `A–Z a–z 0–9 . _ -`,
    /// not starting with `.`.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "the key name is empty" }
        if name.utf8.count > 64 { return "the key name '\(name)' is longer than 64 characters" }
        if name.hasPrefix(".") { return "the key name '\(name)' starts with '.'" }
        for b in name.utf8 {
            let ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2e || b == 0x5f || b == 0x2d
            if !ok { return "the key name '\(name)' has a character other than letters, digits, '.', '_' and '-'" }
        }
        return nil
    }
}

/// Reading and writing Ed25519 key files.
public enum KeyFile {
    /// DER prefix of a PKCS #8 Ed25519 private key (RFC 8410); the 32-byte seed follows.
    static let pkcs8Prefix: [UInt8] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
    /// DER prefix of a SubjectPublicKeyInfo Ed25519 public key (RFC 8410); 32 bytes follow.
    static let spkiPrefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]

    /// Reads a public key file (base64 of 32 raw bytes, or PEM `PUBLIC KEY`).
    /// - Throws: `KeyFileError` when the file cannot be read or holds no Ed25519 public key.
    public static func readPublicKey(_ url: URL) throws(KeyFileError) -> Curve25519.Signing.PublicKey {
        let raw = try rawKey(url, pemLabel: "PUBLIC KEY", derPrefix: spkiPrefix, what: "public key",
                             remedy: "replace it with the NAME.pub written by `edgeq keys generate NAME`")
        do {
            return try Curve25519.Signing.PublicKey(rawRepresentation: raw)
        } catch {
            throw KeyFileError(path: url.path, problem: "not an Ed25519 public key (\(error))",
                               remedy: "replace it with the NAME.pub written by `edgeq keys generate NAME`")
        }
    }

    /// Reads a private key file (base64 of the 32-byte seed, or PEM `PRIVATE KEY`). Refuses a
    /// file that others than its owner may read.
    /// - Throws: `KeyFileError` when the file cannot be read, is readable by group or others, or
    ///   holds no Ed25519 private key.
    public static func readPrivateKey(_ url: URL) throws(KeyFileError) -> Curve25519.Signing.PrivateKey {
        var st = stat()
        if stat(url.path, &st) == 0, st.st_mode & 0o077 != 0 {
            throw KeyFileError(path: url.path, problem: "the private key may be read by others (mode \(String(st.st_mode & 0o777, radix: 8)))",
                               remedy: "run `chmod 600 \(url.path)` (and consider the key leaked if others could read it)")
        }
        let raw = try rawKey(url, pemLabel: "PRIVATE KEY", derPrefix: pkcs8Prefix, what: "private key",
                             remedy: "give the NAME.key written by `edgeq keys generate NAME`")
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        } catch {
            throw KeyFileError(path: url.path, problem: "not an Ed25519 private key (\(error))",
                               remedy: "give the NAME.key written by `edgeq keys generate NAME`")
        }
    }

    /// The 32 key bytes of a file: one base64 line, or a PEM block with `pemLabel` whose DER is
    /// `derPrefix` followed by the key.
    static func rawKey(_ url: URL, pemLabel: String, derPrefix: [UInt8], what: String, remedy: String) throws(KeyFileError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw KeyFileError(path: url.path, problem: "cannot read the \(what) file", remedy: "check that it exists and that EdgeQ's user may read it")
        }
        guard data.count <= 4096, let text = String(data: data, encoding: .utf8) else {
            throw KeyFileError(path: url.path, problem: "not a \(what) file (binary or larger than 4 KiB)", remedy: remedy)
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("-----BEGIN") {
            let begin = "-----BEGIN \(pemLabel)-----", end = "-----END \(pemLabel)-----"
            guard trimmed.hasPrefix(begin), trimmed.hasSuffix(end) else {
                let other = trimmed.split(separator: "\n").first.map(String.init) ?? ""
                throw KeyFileError(path: url.path, problem: "a PEM file of the wrong kind (\(other)); expected \(begin)", remedy: remedy)
            }
            let body = trimmed.dropFirst(begin.count).dropLast(end.count).filter { !$0.isWhitespace }
            guard let der = Data(base64Encoded: String(body)).map(Array.init),
                  der.count == derPrefix.count + 32, Array(der.prefix(derPrefix.count)) == derPrefix else {
                throw KeyFileError(path: url.path, problem: "the PEM block is not an Ed25519 \(what)", remedy: remedy)
            }
            return Array(der.suffix(32))
        }
        guard let raw = Data(base64Encoded: trimmed).map(Array.init) else {
            throw KeyFileError(path: url.path, problem: "not base64 text", remedy: remedy)
        }
        guard raw.count == 32 else {
            throw KeyFileError(path: url.path, problem: "the key is \(raw.count) bytes, an Ed25519 key is 32", remedy: remedy)
        }
        return raw
    }

    /// The text EdgeQ writes for a key: base64 of the raw bytes and a newline.
    public static func text(_ raw: some DataProtocol) -> String { Data(raw).base64EncodedString() + "\n" }

    /// Generates a key pair and writes `NAME.key` (mode 0600, created exclusively) and
    /// `NAME.pub` (mode 0644) in `directory` (created with mode 0700 if missing).
    /// - Returns: the two files.
    /// - Throws: `KeyFileError` when the name is invalid or reserved, a file of that name exists
    ///   (never overwritten), or a file cannot be written.
    @discardableResult
    public static func generate(name: String, directory: URL) throws(KeyFileError) -> (privateKey: URL, publicKey: URL) {
        if let p = KeyName.problem(name) {
            throw KeyFileError(path: directory.appendingPathComponent(name).path, problem: p, remedy: "choose a name such as alice or ops-laptop")
        }
        if KeyName.reserved.contains(name) {
            throw KeyFileError(path: directory.appendingPathComponent(name).path, problem: "'\(name)' is a reserved key name",
                               remedy: "choose another name (reserved: \(KeyName.reserved.sorted().joined(separator: ", ")))")
        }
        let key = Curve25519.Signing.PrivateKey()
        let keyURL = directory.appendingPathComponent("\(name).key")
        let pubURL = directory.appendingPathComponent("\(name).pub")
        for url in [keyURL, pubURL] where FileManager.default.fileExists(atPath: url.path) {
            throw KeyFileError(path: url.path, problem: "the file exists", remedy: "choose another name or move the old key away first (EdgeQ never overwrites a key)")
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KeyFileError(path: directory.path, problem: "cannot create the folder (\(error.localizedDescription))", remedy: "check the path and its permissions")
        }
        try writeExclusive(keyURL, text(key.rawRepresentation), mode: 0o600)
        do {
            try writeExclusive(pubURL, text(key.publicKey.rawRepresentation), mode: 0o644)
        } catch {
            unlink(keyURL.path)
            throw error
        }
        return (keyURL, pubURL)
    }

    /// Creates `url` (which must not exist) with `mode`, writes `text`, fsyncs it and its folder.
    static func writeExclusive(_ url: URL, _ text: String, mode: mode_t) throws(KeyFileError) {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else {
            throw KeyFileError(path: url.path, problem: "cannot create the file (\(String(cString: strerror(errno))))", remedy: "check the folder's permissions and that no file of that name exists")
        }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        // The umask may have narrowed the mode (never widened it); make it exact.
        let ok = written == bytes.count && fchmod(fd, mode) == 0 && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(url.path)
            throw KeyFileError(path: url.path, problem: "cannot write the file (\(String(cString: strerror(errno))))", remedy: "check free disk space")
        }
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 {
            _ = fsync(dir)
            close(dir)
        }
    }
}
