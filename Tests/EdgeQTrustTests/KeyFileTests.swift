// Key files and the trust store: what is read, and the error for each malformed case.
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Testing

@Suite struct KeyFileTests {
    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    @Test func generateWritesAPrivateKeyOnlyItsOwnerReadsAndNeverOverwrites() throws {
        let dir = try TempDir()
        let files = try KeyFile.generate(name: "alice", directory: dir.url.appendingPathComponent("k"))
        #expect(try mode(files.privateKey.path) == 0o600)
        #expect(try mode(files.publicKey.path) == 0o644)
        #expect(try mode(dir.url.appendingPathComponent("k").path) == 0o700)
        let priv = try KeyFile.readPrivateKey(files.privateKey)
        #expect(try KeyFile.readPublicKey(files.publicKey).rawRepresentation == priv.publicKey.rawRepresentation)
        let before = try Data(contentsOf: files.privateKey)
        #expect(throws: KeyFileError.self) { try KeyFile.generate(name: "alice", directory: dir.url.appendingPathComponent("k")) }
        #expect(try Data(contentsOf: files.privateKey) == before)
        #expect(throws: KeyFileError.self) { try KeyFile.generate(name: "none", directory: dir.url) }
        #expect(throws: KeyFileError.self) { try KeyFile.generate(name: "../x", directory: dir.url) }
    }

    @Test func aPrivateKeyOthersMayReadIsRefused() throws {
        let dir = try TempDir()
        let files = try KeyFile.generate(name: "alice", directory: dir.url)
        chmod(files.privateKey.path, 0o644)
        do {
            _ = try KeyFile.readPrivateKey(files.privateKey)
            Issue.record("read a group/other-readable private key")
        } catch {
            #expect(error.description.contains("chmod 600"))
        }
    }

    @Test func malformedPublicKeysSayFileWhatAndWhatToDo() throws {
        let dir = try TempDir()
        let cases: [(String, String)] = [
            ("not base64 at all!", "not base64"),
            (Data(count: 31).base64EncodedString(), "31 bytes"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "wrong kind"),
            ("-----BEGIN PUBLIC KEY-----\n" + Data(count: 44).base64EncodedString() + "\n-----END PUBLIC KEY-----\n", "not an Ed25519"),
        ]
        for (i, (text, expected)) in cases.enumerated() {
            let url = dir.url.appendingPathComponent("k\(i).pub")
            try Data(text.utf8).write(to: url)
            do {
                _ = try KeyFile.readPublicKey(url)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.path == url.path)
                #expect(error.problem.contains(expected), "\(error)")
                #expect(error.description.hasPrefix("\(url.path): "))
                #expect(error.remedy.contains("edgeq keys generate"))
            }
        }
        #expect(throws: KeyFileError.self) { try KeyFile.readPublicKey(dir.url.appendingPathComponent("missing.pub")) }
    }

    @Test func opensslPEMKeysAreRead() throws {
        let dir = try TempDir()
        let priv = dir.url.appendingPathComponent("ops.key").path
        let pub = dir.url.appendingPathComponent("ops.pub").path
        #expect(try ChildProcess.run("openssl", ["genpkey", "-algorithm", "ed25519", "-out", priv], timeout: 30).code == 0)
        #expect(try ChildProcess.run("openssl", ["pkey", "-in", priv, "-pubout", "-out", pub], timeout: 30).code == 0)
        chmod(priv, 0o600)
        let key = try KeyFile.readPrivateKey(URL(fileURLWithPath: priv))
        #expect(try KeyFile.readPublicKey(URL(fileURLWithPath: pub)).rawRepresentation == key.publicKey.rawRepresentation)
    }

    @Test func trustStoreReadsRolesAndRefusesWhatDoesNotBelong() throws {
        let f = try TrustFixture()
        let store = try f.trust()
        #expect(store.commandKey(named: "alice")?.role == .operator)
        #expect(store.commandKey(named: "tom")?.role == .trainer)
        #expect(store.commandKey(named: "mo") == nil)
        #expect(store.modelKey(named: "mo")?.role == .models)
        #expect(store.hasCommandKeys)

        // A README is skipped with a warning.
        try Data("hello".utf8).write(to: f.data.appendingPathComponent("keys/operator/README"))
        #expect(try f.trust().warnings.count == 1)

        // One name in two command roles.
        try FileManager.default.copyItem(atPath: f.publicKeyFile("alice"), toPath: f.data.appendingPathComponent("keys/trainer/alice.pub").path)
        #expect(throws: KeyFileError.self) { try f.trust() }
        try FileManager.default.removeItem(at: f.data.appendingPathComponent("keys/trainer/alice.pub"))

        // A private key among the trusted ones.
        let stray = f.data.appendingPathComponent("keys/operator/alice.key")
        try FileManager.default.copyItem(atPath: f.keyFile("alice"), toPath: stray.path)
        do {
            _ = try f.trust()
            Issue.record("a private key in keys/operator was accepted")
        } catch let error as KeyFileError {
            #expect(error.path == stray.path)
            #expect(error.remedy.contains("move it off the gateway"))
        }
        try FileManager.default.removeItem(at: stray)

        // A reserved name, and a malformed key.
        try FileManager.default.copyItem(atPath: f.publicKeyFile("alice"), toPath: f.data.appendingPathComponent("keys/models/device.pub").path)
        #expect(throws: KeyFileError.self) { try f.trust() }
        try FileManager.default.removeItem(at: f.data.appendingPathComponent("keys/models/device.pub"))
        try Data("garbage".utf8).write(to: f.data.appendingPathComponent("keys/operator/bob.pub"))
        do {
            _ = try f.trust()
            Issue.record("a malformed key was accepted")
        } catch let error as KeyFileError {
            #expect(error.path.hasSuffix("keys/operator/bob.pub"))
        }
    }

    @Test func aDataDirectoryWithoutKeysTrustsNothing() throws {
        let dir = try TempDir()
        let store = try TrustStore.load(dataDirectory: dir.url)
        #expect(!store.hasCommandKeys)
        #expect(store.keys.isEmpty)
    }
}
