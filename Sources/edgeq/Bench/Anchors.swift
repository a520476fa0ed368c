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

    /// The limit OpenBLAS's sgemm speed implies for DQN updates/s on `net` (batch 64),
    /// measured now: `sgemm_peak 1 NET` (single thread, the net's batch-64 layer shapes)
    /// once with the machine's OPENBLAS_* settings and once with OPENBLAS_CORETYPE and
    /// OPENBLAS_L2_SIZE unset, then `train/flops_limit.py --sgemm` on those two outputs.
    /// Never the recorded results files of the anchors folder.
    ///
    /// - Returns: `flops_limit.py`'s figures keyed "flops_limit[env]/FIGURE" and
    ///   "flops_limit[unset]/FIGURE" (e.g. `shaped_updates_per_s`).
    /// - Throws: `BenchError.failed` when a program fails; the message says which.
    func sgemmLimit(net: String, context: BenchContext) throws -> [String: Double] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-sgemm-\(getpid())-\(net)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [String] = []
        for mode in ["env", "unset"] {
            // The file's name is the `blas_env` flops_limit.py reports.
            let out = dir.appendingPathComponent(mode).path
            let pre = mode == "env" ? [] : ["-u", "OPENBLAS_CORETYPE", "-u", "OPENBLAS_L2_SIZE"]
            let r = try ChildProcess.run("env", pre + [program("sgemm_peak"), "1", net], timeout: 600)
            guard r.code == 0 else { throw BenchError.failed("sgemm_peak 1 \(net) (\(mode)) exited \(r.code): \(r.stderr.suffix(300))") }
            do {
                try r.stdout.write(toFile: out, atomically: true, encoding: .utf8)
            } catch {
                throw BenchError.failed("cannot write \(out): \(error)")
            }
            files += ["--sgemm", out]
        }
        // flops_limit.py needs only the standard library: the venv when there is one, else python3.
        let f = try ChildProcess.run(python ?? "python3", [directory.appendingPathComponent("train/flops_limit.py").path, "--json", "--net", net] + files,
                                     timeout: 120, workingDirectory: directory.path)
        guard f.code == 0 else { throw BenchError.failed("flops_limit.py exited \(f.code): \(f.stderr.suffix(300))") }
        return anchorFigures(f.stdout)
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
