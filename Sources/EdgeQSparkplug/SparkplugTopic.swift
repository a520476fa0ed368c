// Sparkplug B topics: `spBv1.0/<group>/<message type>/<edge node>[/<device>]` (Sparkplug 3.0.0, 4.1).

/// The Sparkplug B message types EdgeQ reads or writes.
public enum SparkplugMessageType: String, Sendable, CaseIterable {
    /// An edge node's birth certificate: its metrics' names, aliases, datatypes and values.
    case nbirth = "NBIRTH"
    /// An edge node's death certificate (its MQTT Will, or sent before a clean disconnect).
    case ndeath = "NDEATH"
    /// Values of an edge node's own metrics.
    case ndata = "NDATA"
    /// A command to an edge node (e.g. `Node Control/Rebirth`).
    case ncmd = "NCMD"
    /// A device's birth certificate.
    case dbirth = "DBIRTH"
    /// A device's death certificate.
    case ddeath = "DDEATH"
    /// Values of a device's metrics.
    case ddata = "DDATA"
    /// A command to a device.
    case dcmd = "DCMD"

    /// True for the device-level types (the topic has a fifth level).
    public var isDevice: Bool {
        switch self {
        case .dbirth, .ddeath, .ddata, .dcmd: return true
        default: return false
        }
    }
}

/// The Sparkplug B topic namespace (`spBv1.0`).
public enum SparkplugTopic {
    /// The namespace's first topic level.
    public static let namespace = "spBv1.0"

    /// The topic of a message of `type` for edge node `node` of `group` (and `device` for the
    /// device-level types).
    public static func topic(_ type: SparkplugMessageType, group: String, node: String, device: String? = nil) -> String {
        if let device { return "\(namespace)/\(group)/\(type.rawValue)/\(node)/\(device)" }
        return "\(namespace)/\(group)/\(type.rawValue)/\(node)"
    }

    /// The levels of `topic` when it is in the Sparkplug B namespace (4 or 5 levels), as byte
    /// offsets into its UTF-8 view; nil otherwise. Allocates nothing.
    static func levels(_ topic: String) -> Levels? {
        var l = Levels()
        var ok = false
        topic.utf8.withContiguousStorageIfAvailable { b in
            var start = 0, level = 0
            for i in 0...b.count {
                if i == b.count || b[i] == UInt8(ascii: "/") {
                    if level >= 5 { return }   // too many levels
                    l.set(level, start..<i)
                    level += 1
                    start = i + 1
                }
            }
            l.count = level
            ok = level >= 4 && bytesEqual(b, l.range(0), namespace)
        }
        return ok ? l : nil
    }

    /// Up to 5 topic levels as ranges of UTF-8 offsets (a fixed-size value: no allocation).
    struct Levels {
        var r0 = 0..<0, r1 = 0..<0, r2 = 0..<0, r3 = 0..<0, r4 = 0..<0
        var count = 0
        mutating func set(_ i: Int, _ r: Range<Int>) {
            switch i {
            case 0: r0 = r
            case 1: r1 = r
            case 2: r2 = r
            case 3: r3 = r
            default: r4 = r
            }
        }
        func range(_ i: Int) -> Range<Int> {
            switch i {
            case 0: return r0
            case 1: return r1
            case 2: return r2
            case 3: return r3
            default: return r4
            }
        }
    }
}

/// True when the bytes `b[r]` equal `s`'s UTF-8. Allocates nothing for native strings.
@inline(__always) func bytesEqual(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, _ s: String) -> Bool {
    var s = s
    return s.withUTF8 { u in
        guard u.count == r.count else { return false }
        var i = r.lowerBound
        for c in u {
            if b[i] != c { return false }
            i += 1
        }
        return true
    }
}
