import EdgeQSystem
import Foundation

/// The performance anchors of ../shared/anchors/perf: located, copied to a scratch folder
/// (shared/ is read-only in CI and the scripts write next to themselves), and their C
/// programs built there once.
struct Anchors: Sendable {
    /// The copy of the anchors folder we run scripts from.
    let directory: URL
    /// Where the anchors' C programs are built (`echo_c`, `bench_client`, `mlp_floor`, …).
    let bin: URL
    /// The Python interpreter with the anchors' packages, when it exists.
    let python: String?

    /// Finds the anchors, copies them to `<package root>/.build-anchors/perf` and builds
    /// the C programs (make is incremental: a second call costs nothing).
    ///
    /// The source is `$EDGEQ_ANCHORS_DIR`, else `../shared/anchors/perf` above the package
    /// root (found from the current directory upwards). Python: `$EDGEQ_ANCHORS_PY`, else
    /// `~/.venvs/anchors-perf/bin/python` when it exists.
    static func prepare(_ context: BenchContext) throws -> Anchors {
        let fm = FileManager.default
        let env = ProcessInfo.processInfo.environment
        let root = packageRoot()
        let source: URL
        if let dir = env["EDGEQ_ANCHORS_DIR"] {
            source = URL(fileURLWithPath: dir)
        } else {
            source = root.deletingLastPathComponent().appendingPathComponent("shared/anchors/perf")
        }
        guard fm.fileExists(atPath: source.appendingPathComponent("Makefile").path) else {
            throw BenchError.anchorMissing("no anchors at \(source.path); set EDGEQ_ANCHORS_DIR")
        }
        let scratch = root.appendingPathComponent(".build-anchors")
        let copy = scratch.appendingPathComponent("perf")
        if !fm.fileExists(atPath: copy.appendingPathComponent("Makefile").path) {
            context.progress("copying anchors from \(source.path)")
            try fm.createDirectory(at: scratch, withIntermediateDirectories: true)
            let r = try ChildProcess.run("cp", ["-r", source.path, scratch.path + "/"], timeout: 60)
            guard r.code == 0 else { throw BenchError.anchorMissing("cp failed: \(r.stderr)") }
            _ = try? ChildProcess.run("chmod", ["-R", "u+w", copy.path], timeout: 30)
        }
        let bin = scratch.appendingPathComponent("bin")
        let make = try ChildProcess.run("make", ["-s", "BIN=\(bin.path)"], timeout: 300, workingDirectory: copy.path)
        guard make.code == 0 else {
            throw BenchError.anchorMissing("building the anchors' C programs failed:\n\(make.stderr)")
        }
        var python = env["EDGEQ_ANCHORS_PY"]
        if python == nil {
            let venv = fm.homeDirectoryForCurrentUser.appendingPathComponent(".venvs/anchors-perf/bin/python").path
            if fm.isExecutableFile(atPath: venv) { python = venv }
        }
        return Anchors(directory: copy, bin: bin, python: python)
    }

    /// The path of one of the anchors' C programs.
    func program(_ name: String) -> String { bin.appendingPathComponent(name).path }

    /// The Python interpreter, or an error saying how to get it.
    func requirePython() throws -> String {
        guard let python else {
            throw BenchError.anchorMissing("no Python venv for the anchors (make bench-setup, or set EDGEQ_ANCHORS_PY)")
        }
        return python
    }

    /// The package root: the nearest folder upwards from the current one holding Package.swift.
    static func packageRoot() -> URL {
        var dir = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        while dir.path != "/" {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
            dir.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }
}
