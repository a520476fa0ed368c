import EdgeQTestSupport
import Foundation
import Testing

/// The `edgeq` binary built by `swift build` (the test command builds it first).
enum EdgeQBinary {
    static var path: String {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/" {
            dir.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { break }
        }
        return dir.appendingPathComponent(".build/debug/edgeq").path
    }

    static func run(_ arguments: [String], timeout: Double = 120) throws -> (code: Int32, stdout: String, stderr: String) {
        try ChildProcess.run(path, arguments, timeout: timeout)
    }
}

@Suite struct CLITests {
    @Test func helpListsTheSubcommands() throws {
        let r = try EdgeQBinary.run(["--help"])
        #expect(r.code == 0)
        for sub in ["check", "bench"] {
            #expect(r.stdout.contains(sub), "edgeq --help does not list \(sub):\n\(r.stdout)")
        }
    }

    @Test func benchRejectsAnUnknownName() throws {
        let r = try EdgeQBinary.run(["bench", "nonsense"])
        #expect(r.code == 64)
        #expect(r.stderr.contains("nonsense"))
    }
}
