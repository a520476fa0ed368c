// Test helpers shared by the test targets (re-exports EdgeQSystem: broker fixture, child processes).
@_exported import EdgeQSystem
import Foundation

/// Waits until `condition` holds, polling every 5 ms, for at most `timeout` seconds.
/// Returns whether it held (tests `#expect` the result; nothing here asserts speed).
public func eventually(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    repeat {
        if try condition() { return true }
        usleep(5_000)
    } while Date() < deadline
    return try condition()
}

/// A fresh temporary folder, removed by the caller (`defer { try? FileManager.default.removeItem(at:) }`).
public func temporaryFolder(_ prefix: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// The `edgeq` binary built by `swift build` (the test command builds it before the tests).
public enum BuiltEdgeQ {
    /// `<package root>/.build/debug/edgeq`.
    public static var path: String {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/" {
            dir.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { break }
        }
        return dir.appendingPathComponent(".build/debug/edgeq").path
    }
}

import Foundation

/// A temporary folder, removed when released.
public final class TempDir: Sendable {
    /// The folder.
    public let url: URL

    /// Creates a new empty folder under the system's temporary directory.
    public init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The package's root folder (found from this file upwards), for `topics/` and the binary.
public enum PackageRoot {
    /// The folder holding Package.swift.
    public static var url: URL {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/" {
            dir.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
        }
        return dir
    }

    /// Every mapping file in `topics/`, sorted.
    public static var topicFiles: [String] {
        let dir = url.appendingPathComponent("topics")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted().map { dir.appendingPathComponent($0).path }
    }

    /// The text of `topics/NAME.yaml`.
    public static func topicsFile(_ name: String) throws -> String {
        try String(contentsOf: url.appendingPathComponent("topics/\(name).yaml"), encoding: .utf8)
    }
}

/// The `edgeq` binary built by `swift build --build-tests` (the test command builds it first).
public enum EdgeQBinary {
    /// Its path in the debug build folder.
    public static var path: String { PackageRoot.url.appendingPathComponent(".build/debug/edgeq").path }

    /// Runs it to completion.
    public static func run(_ arguments: [String], timeout: Double = 120) throws -> (code: Int32, stdout: String, stderr: String) {
        try ChildProcess.run(path, arguments, timeout: timeout)
    }
}

/// The figure lines a `edgeq bench NAME --json` run printed, by figure name, checked against the
/// output contract (docs/benchmarks.md): every line a JSON object with a `figure`, of bench
/// `bench`, with every contract key. `problems` says what broke the contract, one line each
/// (empty when nothing did); the per-figure checks stay with each test.
public enum BenchLines {
    /// The contract's keys, present on every line.
    public static let keys = ["bench", "figure", "value", "unit", "anchor", "anchor_value", "ratio", "better"]

    /// Parses `stdout` line by line.
    public static func parse(_ stdout: String, bench: String) -> (lines: [String: [String: Any]], problems: [String]) {
        var lines: [String: [String: Any]] = [:]
        var problems: [String] = []
        for line in stdout.split(separator: "\n") {
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let figure = o["figure"] as? String else {
                problems.append("not a figure line: \(line)")
                continue
            }
            if o["bench"] as? String != bench { problems.append("\(figure) is of bench \(o["bench"] ?? "none"), not \(bench)") }
            for key in keys where !o.keys.contains(key) { problems.append("\(figure) has no \(key)") }
            lines[figure] = o
        }
        return (lines, problems)
    }
}
