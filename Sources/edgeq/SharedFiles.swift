import Foundation

/// The example mappings (`topics/`) and deploy files (`deploy/`) that ship with `edgeq`, found
/// wherever it is installed (docs/operations.md, "Install and run as a service").
///
/// Places searched, first match wins:
/// 1. `$EDGEQ_SHARE` (when set and not empty);
/// 2. `<directory of the executable>/../share/edgeq` (`make install`, the .deb: `/usr/bin/edgeq`
///    finds `/usr/share/edgeq`), symbolic links to the executable resolved;
/// 3. the checkout: the folder holding `Package.swift` above the current directory, then above
///    the executable (`.build/debug/edgeq`).
///
/// The benchmarks keep their own package-root lookup (`Anchors.packageRoot`): they need a checkout.
enum SharedFiles {
    /// A file or folder that none of the places holds; says where it looked and what to do.
    struct NotFound: Error, CustomStringConvertible {
        let relativePath: String
        let searched: [String]
        var description: String {
            "cannot find \(relativePath) of EdgeQ's shared files; looked in: "
                + searched.joined(separator: ", ")
                + ". Install edgeq (make install, or the .deb), set EDGEQ_SHARE to the folder holding topics/ and deploy/, or run from a checkout."
        }
    }

    /// The candidate folders, in search order (duplicates removed).
    static func candidates(environment: [String: String] = ProcessInfo.processInfo.environment,
                           executable: URL? = executableURL(),
                           currentDirectory: String = FileManager.default.currentDirectoryPath) -> [URL] {
        var list: [URL] = []
        if let share = environment["EDGEQ_SHARE"], !share.isEmpty { list.append(URL(fileURLWithPath: share)) }
        if let exe = executable {
            list.append(exe.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("share/edgeq"))
        }
        if let root = checkoutRoot(above: URL(fileURLWithPath: currentDirectory)) { list.append(root) }
        if let exe = executable, let root = checkoutRoot(above: exe.deletingLastPathComponent()) { list.append(root) }
        var seen = Set<String>()
        return list.map(\.standardizedFileURL).filter { seen.insert($0.path).inserted }
    }

    /// The first candidate that holds `relativePath` (e.g. `topics/thermal.yaml`).
    ///
    /// - Throws: `SharedFiles.NotFound` naming every place searched.
    static func locate(_ relativePath: String) throws -> URL {
        let places = candidates()
        for base in places {
            let url = base.appendingPathComponent(relativePath)
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        throw NotFound(relativePath: relativePath, searched: places.map(\.path))
    }

    /// This process's executable, symbolic links resolved (`/proc/self/exe` on Linux).
    static func executableURL() -> URL? {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path)
        }
        guard let arg0 = CommandLine.arguments.first, arg0.contains("/") else { return nil }
        return URL(fileURLWithPath: arg0).resolvingSymlinksInPath()
    }

    /// The folder holding `Package.swift` at or above `start`, if any.
    static func checkoutRoot(above start: URL) -> URL? {
        var dir = start.standardizedFileURL
        while true {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
            if dir.path == "/" || dir.path.isEmpty { return nil }
            dir.deleteLastPathComponent()
        }
    }
}
