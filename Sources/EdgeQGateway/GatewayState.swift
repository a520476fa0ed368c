import Foundation

/// What the gateway remembers across restarts, in `DATA/gateway-state.json`: the mode
/// (so a gateway handed control comes back in control), and why it last changed.
public struct GatewayState: Codable, Sendable, Equatable {
    /// The persisted mode.
    public var mode: GatewayMode
    /// Why the mode last changed (`command by alice`, live guard, start-up option).
    public var reason: String
    /// When the mode last changed (Unix seconds).
    public var since: Double
    /// The key that signed the command that changed it (`none` under `auth: none`); nil when
    /// no command did (a file written before signed commands, the live guard, a start option).
    public var by: String?

    /// A state; `by` is the signing key of the command that asked for it, if any.
    public init(mode: GatewayMode, reason: String, since: Double = Date().timeIntervalSince1970, by: String? = nil) {
        self.mode = mode
        self.reason = reason
        self.since = since
        self.by = by
    }

    /// The state file in `dataDirectory`.
    public static func url(in dataDirectory: URL) -> URL {
        dataDirectory.appendingPathComponent("gateway-state.json")
    }

    /// Loads the persisted state; nil when there is none (first start).
    ///
    /// - Throws: `DurableFile.Error`-style text when the file exists but cannot be read or
    ///   parsed (delete it to start in the mapping file's starting mode).
    public static func load(from dataDirectory: URL) throws -> GatewayState? {
        let u = url(in: dataDirectory)
        guard FileManager.default.fileExists(atPath: u.path) else { return nil }
        do {
            return try JSONDecoder().decode(GatewayState.self, from: Data(contentsOf: u))
        } catch {
            throw ModelStore.Error(description: "\(u.path): unreadable gateway state (\(error)); delete it to start in the mapping file's starting mode")
        }
    }

    /// Saves the state durably (temp file, fsync, rename, fsync folder).
    public func save(to dataDirectory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try DurableFile.write(try encoder.encode(self), to: Self.url(in: dataDirectory))
    }
}
