import Foundation

/// A throwaway PKI made with `openssl` for TLS tests and demos: a CA, a server
/// certificate for 127.0.0.1 / localhost signed by it, a client certificate signed by it,
/// and a second, unrelated CA that signed nothing the broker uses (for "untrusted CA"
/// tests). Keys are P-256 (fast to make); everything is valid for 2 days.
public struct TestCertificates: Sendable {
    /// The folder holding the PEM files.
    public let directory: URL
    /// The CA certificate that signed the server and client certificates.
    public var caFile: String { path("ca.crt") }
    /// The server certificate (SAN IP:127.0.0.1, DNS:localhost) and its key.
    public var serverCertificateFile: String { path("server.crt") }
    /// The server's private key.
    public var serverKeyFile: String { path("server.key") }
    /// A client certificate (CN=edgeq-test-client) signed by the CA, and its key.
    public var clientCertificateFile: String { path("client.crt") }
    /// The client's private key.
    public var clientKeyFile: String { path("client.key") }
    /// A CA that signed nothing here: a client trusting only it must refuse the broker.
    public var untrustedCAFile: String { path("untrusted-ca.crt") }

    /// Errors from making the certificates.
    public struct Error: Swift.Error, CustomStringConvertible {
        /// What failed, with openssl's message.
        public let description: String
    }

    /// Generates the certificates into `directory` (created if needed).
    ///
    /// - Throws: `TestCertificates.Error` when openssl is missing or fails (its stderr is quoted).
    public init(in directory: URL) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.makeCA(name: "ca", subject: "/CN=EdgeQ Test CA", in: directory)
        try Self.makeCA(name: "untrusted-ca", subject: "/CN=EdgeQ Untrusted CA", in: directory)
        try Self.makeLeaf(name: "server", subject: "/CN=localhost",
                          extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
                          in: directory)
        try Self.makeLeaf(name: "client", subject: "/CN=edgeq-test-client",
                          extensions: "extendedKeyUsage=clientAuth\n", in: directory)
        // mosquitto started as root drops to the `mosquitto` user, which must read the
        // server key: these throwaway test keys are made world-readable (never do this
        // with a real key).
        for key in ["ca.key", "untrusted-ca.key", "server.key", "client.key"] {
            try FileManager.default.setAttributes([.posixPermissions: 0o644],
                                                  ofItemAtPath: directory.appendingPathComponent(key).path)
        }
    }

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    private static func openssl(_ args: [String], in dir: URL) throws {
        let r = try ChildProcess.run("openssl", args, timeout: 60, workingDirectory: dir.path)
        guard r.code == 0 else {
            throw Error(description: "openssl \(args.first ?? "") failed (\(r.code)): \(r.stderr)")
        }
    }

    private static let keyOptions = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    private static func makeCA(name: String, subject: String, in dir: URL) throws {
        try openssl(["req", "-x509"] + keyOptions + [
            "-keyout", "\(name).key", "-out", "\(name).crt", "-days", "2", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ], in: dir)
    }

    private static func makeLeaf(name: String, subject: String, extensions: String, in dir: URL) throws {
        try openssl(["req"] + keyOptions + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject], in: dir)
        let ext = dir.appendingPathComponent("\(name).ext")
        try ("basicConstraints=CA:FALSE\n" + extensions).write(to: ext, atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-set_serial", String(UInt32.random(in: 1...UInt32.max)),
                     "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext"], in: dir)
    }
}
