import EdgeQTestSupport
import Foundation
import Testing

/// `make install`, `make deb` and deploy/edgeq@.service with the real tools: make, dpkg-deb,
/// dpkg, systemd-analyze, and the installed `edgeq` run from outside the checkout.
///
/// The trees are built from the debug binary the test command built (`EDGEQ_BIN=…`), not from
/// the release build `make install` and `make deb` make by default: a static release build
/// takes ~15 minutes on the 2-core CI machine, the suite must stay short, and the tree,
/// control file and lookups are the same. The debug binary links the toolchain's shared Swift
/// runtime (present wherever the tests run); the release binary has it inside. The .deb is
/// built uncompressed here (`DEB_COMPRESS=none`: xz takes minutes on a busy machine).
@Suite struct InstallTests {
    /// `make TARGET VAR=…` in the checkout; the output when it fails.
    static func make(_ arguments: [String]) throws -> (code: Int32, output: String) {
        let r = try ChildProcess.run("make", ["--no-print-directory"] + arguments, timeout: 600,
                                     workingDirectory: PackageRoot.url.path)
        return (r.code, r.stdout + r.stderr)
    }

    /// The `KEY=value` lines of a unit file, by section (a key may repeat).
    static func unitKeys(_ text: String) -> [String: [String: [String]]] {
        var sections: [String: [String: [String]]] = [:]
        var current = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                current = String(line.dropFirst().dropLast())
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<eq]).trimmingCharacters(in: .whitespaces)
            let value = String(line[line.index(after: eq)...]).trimmingCharacters(in: .whitespaces)
            sections[current, default: [:]][key, default: []].append(value)
        }
        return sections
    }

    /// The unit says what the service needs (checked by reading it, everywhere), and
    /// `systemd-analyze verify` accepts it with the installed binary and man page.
    @Test func theUnitHasItsKeysAndPassesSystemdAnalyzeVerify() throws {
        let text = try String(contentsOf: PackageRoot.url.appendingPathComponent("deploy/edgeq@.service"), encoding: .utf8)
        let keys = Self.unitKeys(text)
        let service = keys["Service"] ?? [:]
        #expect(service["Type"] == ["notify"])
        #expect(service["NotifyAccess"] == ["main"])
        let watchdog = service["WatchdogSec"]?.first.flatMap { Int($0) }
        #expect(watchdog.map { $0 > 0 } == true, "WatchdogSec: \(service["WatchdogSec"] ?? [])")
        #expect(service["Restart"] == ["on-failure"])
        let exec = service["ExecStart"]?.first ?? ""
        #expect(exec.hasPrefix("/usr/bin/edgeq run "), "\(exec)")
        #expect(exec.contains("--config /etc/edgeq/%i.yaml"), "\(exec)")
        #expect(exec.contains("--data /var/lib/edgeq/%i"), "\(exec)")
        #expect(service["StateDirectory"] == ["edgeq/%i"])
        #expect(service["DynamicUser"] == ["yes"] || service["User"] != nil)
        #expect(service["ProtectSystem"] == ["strict"])
        #expect(service["ReadWritePaths"].map { ["/var/lib/edgeq/%i", "-/var/lib/edgeq/%i"].contains($0.first ?? "") } == true)
        #expect(service["NoNewPrivileges"] == ["yes"])
        #expect(service["PrivateTmp"] == ["yes"])
        #expect(service["ProtectHome"] == ["yes"])
        #expect(keys["Install"]?["WantedBy"] == ["multi-user.target"])

        guard let analyze = ChildProcess.resolve("systemd-analyze") else {
            print("""
                NOTE: systemd-analyze is not on PATH: deploy/edgeq@.service was checked by reading its keys only, \
                not verified by systemd. Install the Debian package systemd (scripts/setup.sh does) to verify it.
                """)
            return
        }
        // The unit as installed, its ExecStart pointed at the binary installed in the scratch
        // tree (verify checks that it is executable) and the man page of Documentation= found
        // through MANPATH.
        let dir = try TempDir()
        let root = dir.url.appendingPathComponent("root")
        let install = try Self.make(["install-files", "EDGEQ_BIN=\(EdgeQBinary.path)", "PREFIX=/usr", "DESTDIR=\(root.path)"])
        try #require(install.code == 0, "make install-files failed:\n\(install.output)")
        let installed = try String(contentsOf: root.appendingPathComponent("usr/lib/systemd/system/edgeq@.service"), encoding: .utf8)
        let unitDir = dir.url.appendingPathComponent("units")
        try FileManager.default.createDirectory(at: unitDir, withIntermediateDirectories: true)
        let unit = unitDir.appendingPathComponent("edgeq@.service")
        try installed.replacingOccurrences(of: "ExecStart=/usr/bin/edgeq", with: "ExecStart=\(root.path)/usr/bin/edgeq")
            .write(to: unit, atomically: true, encoding: .utf8)
        var arguments = ["verify", unit.path]
        var environment: [String: String] = [:]
        if ChildProcess.resolve("man") != nil {
            environment["MANPATH"] = root.appendingPathComponent("usr/share/man").path
        } else {
            print("NOTE: man is not on PATH: systemd-analyze verify runs with --man=no (Documentation=man:edgeq(1) not checked)")
            arguments.insert("--man=no", at: 0)
        }
        let r = try ChildProcess.run(analyze, arguments, timeout: 120, environment: environment)
        // verify exits 0 on many problems it only warns about: any output is a finding.
        #expect(r.code == 0 && r.stderr.isEmpty && r.stdout.isEmpty,
                "systemd-analyze verify: exit \(r.code)\n\(r.stdout)\(r.stderr)")
    }

    /// `make install DESTDIR=… PREFIX=/usr/local`: every file in its place, the unit pointing at
    /// the installed binary, the man page covering every subcommand of the help.
    @Test func makeInstallPutsEveryFileInPlace() throws {
        let dir = try TempDir()
        let dest = dir.url.appendingPathComponent("dest")
        let r = try Self.make(["install", "EDGEQ_BIN=\(EdgeQBinary.path)", "DESTDIR=\(dest.path)"])
        try #require(r.code == 0, "make install failed:\n\(r.output)")
        let prefix = dest.appendingPathComponent("usr/local")
        let fm = FileManager.default
        #expect(fm.isExecutableFile(atPath: prefix.appendingPathComponent("bin/edgeq").path))
        for topic in PackageRoot.topicFiles {
            let name = URL(fileURLWithPath: topic).lastPathComponent
            let installed = prefix.appendingPathComponent("share/edgeq/topics/\(name)")
            #expect(fm.contentsEqual(atPath: topic, andPath: installed.path), "share/edgeq/topics/\(name)")
        }
        for name in ["mosquitto-demo.conf", "mosquitto.conf", "edgeq@.service", "prometheus.yml"] {
            #expect(fm.fileExists(atPath: prefix.appendingPathComponent("share/edgeq/deploy/\(name)").path), "share/edgeq/deploy/\(name)")
        }
        let unit = try String(contentsOf: prefix.appendingPathComponent("lib/systemd/system/edgeq@.service"), encoding: .utf8)
        #expect(Self.unitKeys(unit)["Service"]?["ExecStart"]?.first?.hasPrefix("/usr/local/bin/edgeq run ") == true)

        // The man page: generated from the help, so every visible subcommand and every option of
        // `run` (as --experimental-dump-help lists them) is in it.
        let man = try String(contentsOf: prefix.appendingPathComponent("share/man/man1/edgeq.1"), encoding: .utf8)
        #expect(man.hasPrefix(".TH EDGEQ 1 "))
        let dump = try EdgeQBinary.run(["--experimental-dump-help"])
        let tool = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        let command = try #require(tool["command"] as? [String: Any])
        let subcommands = (command["subcommands"] as? [[String: Any]]) ?? []
        for sub in subcommands where (sub["shouldDisplay"] as? Bool) != false {
            guard let name = sub["commandName"] as? String, name != "help" else { continue }
            #expect(man.contains(".SS edgeq \(name.replacingOccurrences(of: "-", with: "\\-"))"), "no section for edgeq \(name)")
            if name == "run" {
                for arg in (sub["arguments"] as? [[String: Any]]) ?? [] {
                    guard let pref = arg["preferredName"] as? [String: Any], let option = pref["name"] as? String,
                          option != "help", option != "version" else { continue }
                    #expect(man.contains("\\-\\-" + option.replacingOccurrences(of: "-", with: "\\-")), "run --\(option) not in the man page")
                }
            }
        }
        // Hidden developer tools stay out of it.
        #expect(!man.contains("log\\-stress"))
    }

    /// `make deb`: dpkg-deb's package declares every shared library the binary links, installs
    /// into a scratch root, and the installed `edgeq demo` runs from a folder outside the
    /// checkout, on the installed example mapping and broker configuration.
    @Test func debInstallsIntoAScratchRootAndItsDemoRuns() throws {
        let dir = try TempDir()
        let debDir = dir.url.appendingPathComponent("deb")
        let r = try Self.make(["deb", "EDGEQ_BIN=\(EdgeQBinary.path)", "DEB_DIR=\(debDir.path)", "DEB_COMPRESS=none"])
        try #require(r.code == 0, "make deb failed:\n\(r.output)")
        let debs = try FileManager.default.contentsOfDirectory(atPath: debDir.path).filter { $0.hasSuffix(".deb") }
        try #require(debs.count == 1, "\(debs)")
        let deb = debDir.appendingPathComponent(debs[0]).path

        // The control file.
        let info = try ChildProcess.run("dpkg-deb", ["-f", deb, "Package", "Version", "Architecture", "Depends"], timeout: 60)
        try #require(info.code == 0, "\(info.stderr)")
        #expect(info.stdout.contains("Package: edgeq"))
        let dependsLine = info.stdout.split(separator: "\n").first { $0.hasPrefix("Depends: ") } ?? ""
        let depends = Set(dependsLine.dropFirst("Depends: ".count).split(separator: ",").flatMap { group in
            group.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces).split(separator: " ").first.map(String.init) ?? "" }
        })

        // Unpack it into a scratch root, as dpkg would install it.
        let root = dir.url.appendingPathComponent("root")
        let x = try ChildProcess.run("dpkg-deb", ["-x", deb, root.path], timeout: 120)
        try #require(x.code == 0, "\(x.stderr)")
        let binary = root.appendingPathComponent("usr/bin/edgeq").path
        let fm = FileManager.default
        #expect(fm.isExecutableFile(atPath: binary))
        #expect(fm.fileExists(atPath: root.appendingPathComponent("usr/lib/systemd/system/edgeq@.service").path))
        #expect(fm.fileExists(atPath: root.appendingPathComponent("usr/share/man/man1/edgeq.1.gz").path))
        #expect(fm.fileExists(atPath: root.appendingPathComponent("usr/share/edgeq/topics/thermal.yaml").path))

        // Every library the binary needs (its ELF NEEDED entries) belongs to a package it
        // depends on. The debug binary's Swift runtime comes from the toolchain (not a Debian
        // package); the release binary has none of those entries.
        let needed = try ChildProcess.run("objdump", ["-p", binary], timeout: 60)
        try #require(needed.code == 0, "\(needed.stderr)")
        let ldd = try ChildProcess.run("ldd", [binary], timeout: 60)
        var paths: [String: String] = [:]
        for line in ldd.stdout.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.count >= 3, parts[1] == "=>" { paths[String(parts[0])] = String(parts[2]) }
            if let first = parts.first, first.hasPrefix("/") { paths[URL(fileURLWithPath: String(first)).lastPathComponent] = String(first) }
        }
        let toolchainRuntime = ["libswift", "libFoundation", "lib_FoundationICU", "libdispatch", "libBlocksRuntime"]
        var checked = 0
        for line in needed.stdout.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("NEEDED") {
            guard let lib = line.split(separator: " ", omittingEmptySubsequences: true).last.map(String.init) else { continue }
            if toolchainRuntime.contains(where: { lib.hasPrefix($0) }) { continue }
            let path = try #require(paths[lib], "ldd does not resolve \(lib):\n\(ldd.stdout)")
            let package = try Self.owningPackage(path)
            #expect(package.map { depends.contains($0) } == true,
                    "\(lib) (\(path)) belongs to \(package ?? "no package"), not in Depends: \(dependsLine)")
            checked += 1
        }
        #expect(checked >= 5, "only \(checked) system libraries checked")

        // The installed demo, from a folder outside the checkout, with no EDGEQ_SHARE.
        let outside = dir.url.appendingPathComponent("elsewhere")
        try fm.createDirectory(at: outside, withIntermediateDirectories: true)
        let demo = try ChildProcess.run(binary, ["demo", "--shadow-weeks", "2", "--eval-weeks", "1", "--updates", "3000",
                                                 "--data", dir.url.appendingPathComponent("data").path],
                                        timeout: 600, environment: ["EDGEQ_SHARE": ""], workingDirectory: outside.path)
        #expect(demo.code == 0, "installed edgeq demo exited \(demo.code):\n\(demo.stdout)\n\(demo.stderr)")
        #expect(demo.stdout.contains("(\(root.path)/usr/share/edgeq/deploy/mosquitto-demo.conf)"), "\(demo.stdout)")
        #expect(demo.stdout.contains("PI incumbent        EdgeQ"), "\(demo.stdout)")
    }

    /// A binary with no shared files anywhere says where it looked and what to do (exit 66).
    @Test func demoWithoutItsFilesNamesThePlacesSearched() throws {
        let dir = try TempDir()
        let bin = dir.url.appendingPathComponent("opt/bin")
        let share = dir.url.appendingPathComponent("empty-share")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: share, withIntermediateDirectories: true)
        let binary = bin.appendingPathComponent("edgeq").path
        // Copied by cp, not by this process: a child another test spawns meanwhile would inherit
        // our open file and the copy could not be run (ETXTBSY).
        let cp = try ChildProcess.run("cp", [EdgeQBinary.path, binary], timeout: 60)
        try #require(cp.code == 0, "\(cp.stderr)")
        let r = try ChildProcess.run(binary, ["demo", "--shadow-weeks", "1", "--eval-weeks", "1"], timeout: 60,
                                     environment: ["EDGEQ_SHARE": share.path], workingDirectory: dir.url.path)
        #expect(r.code == 66, "exit \(r.code): \(r.stderr)")
        #expect(r.stderr.contains("cannot find topics/thermal.yaml"), "\(r.stderr)")
        #expect(r.stderr.contains(share.path), "\(r.stderr)")
        #expect(r.stderr.contains(dir.url.appendingPathComponent("opt/share/edgeq").standardizedFileURL.path), "\(r.stderr)")
        #expect(r.stderr.contains("EDGEQ_SHARE"), "\(r.stderr)")
    }

    /// The Debian package that owns `path` (tried as given, with and without the /usr prefix of a
    /// merged /usr, and through its symbolic links: libopenblas.so.0 is an alternative).
    static func owningPackage(_ path: String) throws -> String? {
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var candidates: [String] = []
        for p in [path, real] {
            candidates.append(p)
            candidates.append(p.hasPrefix("/usr/") ? String(p.dropFirst(4)) : "/usr" + p)
        }
        for c in candidates {
            let r = try ChildProcess.run("dpkg", ["-S", c], timeout: 60)
            guard r.code == 0, let line = r.stdout.split(separator: "\n").first,
                  let name = line.split(separator: ":").first else { continue }
            return String(name)
        }
        return nil
    }
}
