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
        /// Each place, as the message names it (`/usr/share/edgeq (next to the executable)`).
        let searched: [String]
        var description: String {
            "cannot find \(relativePath) of EdgeQ's shared files; looked in: "
                + searched.joined(separator: "; ")
                + ". Install edgeq (make install, or the .deb), set EDGEQ_SHARE to the folder holding topics/ and deploy/, or run from a checkout."
        }
    }

    /// One place to look: a folder (nil when there is none, e.g. no checkout) and how the
    /// error message names it.
    struct Place {
        let folder: URL?
        let label: String
    }

    /// The places, in search order.
    static func places(environment: [String: String] = ProcessInfo.processInfo.environment,
                       executable: URL? = executableURL(),
                       currentDirectory: String = FileManager.default.currentDirectoryPath) -> [Place] {
        var list: [Place] = []
        if let share = environment["EDGEQ_SHARE"], !share.isEmpty {
            let url = URL(fileURLWithPath: share).standardizedFileURL
            list.append(Place(folder: url, label: "\(url.path) ($EDGEQ_SHARE)"))
        } else {
            list.append(Place(folder: nil, label: "$EDGEQ_SHARE (not set)"))
        }
        if let exe = executable {
            let url = exe.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("share/edgeq").standardizedFileURL
            list.append(Place(folder: url, label: "\(url.path) (beside the executable \(exe.path))"))
        }
        let cwd = URL(fileURLWithPath: currentDirectory)
        let starts = [cwd] + (executable.map { [$0.deletingLastPathComponent()] } ?? [])
        var roots: [URL] = []
        for start in starts {
            if let root = checkoutRoot(above: start), !roots.contains(root) { roots.append(root) }
        }
        if roots.isEmpty {
            list.append(Place(folder: nil, label: "a checkout (no Package.swift above \(starts.map(\.path).joined(separator: " or ")))"))
        }
        for root in roots { list.append(Place(folder: root, label: "\(root.path) (checkout)")) }
        return list
    }

    /// The first place that holds `relativePath` (e.g. `topics/thermal.yaml`).
    ///
    /// - Throws: `SharedFiles.NotFound` naming every place searched.
    static func locate(_ relativePath: String) throws -> URL {
        let list = places()
        for place in list {
            guard let base = place.folder else { continue }
            let url = base.appendingPathComponent(relativePath)
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        throw NotFound(relativePath: relativePath, searched: list.map(\.label))
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
