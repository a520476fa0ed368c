// EdgeQ as a Sparkplug B edge node: the metrics it announces (NBIRTH), their changes (NDATA),
// its death certificate (NDEATH, its MQTT Will). docs/operations.md, "Sparkplug B".
import EdgeQTopicMap
import Foundation
import SwiftProtobuf

/// What EdgeQ announces about itself as a Sparkplug edge node.
public struct EdgeNodeSnapshot: Sendable, Equatable {
    /// `shadow` or `control`.
    public var mode: String
    /// The served model's version; nil when none is served.
    public var modelVersion: Int?
    /// The last decision's action name (`hold` when nothing was applied or chosen); empty
    /// before the first decision.
    public var lastAction: String
    /// The reward of the last closed transition; nil before the first.
    public var reward: Double?
    /// Decision ticks since start.
    public var decisions: UInt64
    /// Ticks that fell back (stale, invalid, no model, …) since start.
    public var fallbacks: UInt64

    /// A snapshot with these values.
    public init(mode: String, modelVersion: Int?, lastAction: String, reward: Double?, decisions: UInt64, fallbacks: UInt64) {
        self.mode = mode
        self.modelVersion = modelVersion
        self.lastAction = lastAction
        self.reward = reward
        self.decisions = decisions
        self.fallbacks = fallbacks
    }
}

/// The payloads of EdgeQ's own edge node.
public enum SparkplugEdgeNodeMessages {
    /// The metrics, by alias (1…): name and datatype. Aliases are fixed: NDATA carries the alias
    /// alone, as the birth announced it.
    public static let metrics: [(alias: UInt64, name: String, type: SparkplugBDataType)] = [
        (1, "EdgeQ/Mode", .string),
        (2, "EdgeQ/Model Version", .int64),
        (3, "EdgeQ/Last Action", .string),
        (4, "EdgeQ/Reward", .double),
        (5, "EdgeQ/Decisions", .uint64),
        (6, "EdgeQ/Fallbacks", .uint64),
    ]

    static func metric(_ index: Int, of s: EdgeNodeSnapshot, withName: Bool, timestampMs: UInt64) -> SparkplugBPayload.Metric {
        let (alias, name, type) = metrics[index]
        var m = SparkplugBPayload.Metric()
        if withName {
            m.name = name
            m.datatype = UInt32(type.rawValue)
        }
        m.alias = alias
        m.timestamp = timestampMs
        switch index {
        case 0: m.value = .stringValue(s.mode)
        case 1: if let v = s.modelVersion { m.value = .longValue(UInt64(bitPattern: Int64(v))) } else { m.isNull = true }
        case 2: m.value = .stringValue(s.lastAction)
        case 3: if let r = s.reward, r.isFinite { m.value = .doubleValue(r) } else { m.isNull = true }
        case 4: m.value = .longValue(s.decisions)
        default: m.value = .longValue(s.fallbacks)
        }
        if withName { return m }
        // NDATA: pysparkplug and others read the datatype from the birth; sending it costs
        // 2 bytes and spares hosts that do not keep births a guess.
        m.datatype = UInt32(type.rawValue)
        return m
    }

    static func changed(_ i: Int, _ a: EdgeNodeSnapshot, _ b: EdgeNodeSnapshot) -> Bool {
        switch i {
        case 0: return a.mode != b.mode
        case 1: return a.modelVersion != b.modelVersion
        case 2: return a.lastAction != b.lastAction
        case 3: return a.reward != b.reward && !(a.reward?.isNaN == true && b.reward?.isNaN == true)
        case 4: return a.decisions != b.decisions
        default: return a.fallbacks != b.fallbacks
        }
    }

    /// The NBIRTH: `bdSeq`, `Node Control/Rebirth` (false) and every metric with its name,
    /// alias, datatype and value; sequence number `seq` (0 after a connect or a rebirth).
    public static func birth(_ s: EdgeNodeSnapshot, bdSeq: UInt64, seq: UInt64, timestampMs: UInt64 = SparkplugCommands.currentMs()) -> [UInt8] {
        var p = SparkplugBPayload()
        p.timestamp = timestampMs
        p.seq = seq
        var bd = SparkplugBPayload.Metric()
        bd.name = "bdSeq"
        bd.datatype = UInt32(SparkplugBDataType.uint64.rawValue)
        bd.timestamp = timestampMs
        bd.value = .longValue(bdSeq)
        var rebirth = SparkplugBPayload.Metric()
        rebirth.name = SparkplugCommands.rebirthMetric
        rebirth.datatype = UInt32(SparkplugBDataType.boolean.rawValue)
        rebirth.timestamp = timestampMs
        rebirth.value = .booleanValue(false)
        p.metrics = [bd, rebirth] + metrics.indices.map { metric($0, of: s, withName: true, timestampMs: timestampMs) }
        return (try? p.serializedBytes()) ?? []
    }

    /// The NDATA with the metrics that changed from `old` to `new` (by alias), or nil when none did.
    public static func data(from old: EdgeNodeSnapshot, to new: EdgeNodeSnapshot, seq: UInt64,
                            timestampMs: UInt64 = SparkplugCommands.currentMs()) -> [UInt8]? {
        let changedMetrics = metrics.indices.filter { changed($0, old, new) }
        guard !changedMetrics.isEmpty else { return nil }
        var p = SparkplugBPayload()
        p.timestamp = timestampMs
        p.seq = seq
        p.metrics = changedMetrics.map { metric($0, of: new, withName: false, timestampMs: timestampMs) }
        return (try? p.serializedBytes()) ?? []
    }

    /// The NDEATH (the edge node's MQTT Will): its `bdSeq`, which a host compares with the
    /// birth's. No timestamp: the Will is written at connect, long before the death.
    public static func death(bdSeq: UInt64) -> [UInt8] {
        var p = SparkplugBPayload()
        var bd = SparkplugBPayload.Metric()
        bd.name = "bdSeq"
        bd.datatype = UInt32(SparkplugBDataType.uint64.rawValue)
        bd.value = .longValue(bdSeq)
        p.metrics = [bd]
        return (try? p.serializedBytes()) ?? []
    }

    /// True when an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true).
    public static func isRebirthRequest(_ payload: [UInt8]) -> Bool {
        guard let p = try? SparkplugBPayload(serializedBytes: payload) else { return false }
        return p.metrics.contains { m in
            guard m.name == SparkplugCommands.rebirthMetric, case .booleanValue(true)? = m.value else { return false }
            return true
        }
    }
}
