// Messages EdgeQ sends to Sparkplug B edge nodes: rebirth requests and metric writes (NCMD/DCMD).
import EdgeQTopicMap
import Foundation
import SwiftProtobuf

/// Encoding of the commands EdgeQ sends to Sparkplug B edge nodes.
public enum SparkplugCommands {
    /// The node control metric that asks an edge node to publish its births again.
    public static let rebirthMetric = "Node Control/Rebirth"

    /// A rebirth request for edge node `node` of `group`: NCMD with `Node Control/Rebirth` =
    /// true (Sparkplug 3.0.0, 6.4.20). Returns the topic and the payload bytes.
    public static func rebirth(group: String, node: String, timestampMs: UInt64 = currentMs()) -> (topic: String, payload: [UInt8]) {
        var m = SparkplugBPayload.Metric()
        m.name = rebirthMetric
        m.datatype = UInt32(SparkplugBDataType.boolean.rawValue)
        m.timestamp = timestampMs
        m.value = .booleanValue(true)
        var p = SparkplugBPayload()
        p.timestamp = timestampMs
        p.metrics = [m]
        let bytes: [UInt8] = (try? p.serializedBytes()) ?? []
        return (SparkplugTopic.topic(.ncmd, group: group, node: node), bytes)
    }

    /// The payload of an action's Sparkplug write: an NCMD/DCMD with one metric, `write.metric`
    /// set to `value` as `write.datatype` (integers rounded to the nearest; Boolean: ≠ 0 is
    /// true). Nil when the value does not fit the datatype (not finite, or outside an integer
    /// type's range): the write is not sent. Allocates (protobuf encoding).
    public static func payload(_ write: SparkplugWrite, value: Double, timestampMs: UInt64 = currentMs()) -> [UInt8]? {
        guard value.isFinite else { return nil }
        var m = SparkplugBPayload.Metric()
        m.name = write.metric
        m.datatype = UInt32(write.datatype.rawValue)
        m.timestamp = timestampMs
        if let range = write.datatype.integerRange {
            let v = value.rounded()
            // The upper bounds of Int64/UInt64 round up to 2^63/2^64 as doubles: strictly below.
            guard v >= range.lowerBound, v <= range.upperBound, v < 18_446_744_073_709_551_616 else { return nil }
            switch write.datatype {
            case .int8, .int16, .int32: m.value = .intValue(UInt32(bitPattern: Int32(v)))
            case .uint8, .uint16, .uint32: m.value = .intValue(UInt32(v))
            case .int64:
                guard v < 9_223_372_036_854_775_808 else { return nil }
                m.value = .longValue(UInt64(bitPattern: Int64(v)))
            default: m.value = .longValue(UInt64(v))
            }
        } else {
            switch write.datatype {
            case .float:
                guard Swift.abs(value) <= Double(Float.greatestFiniteMagnitude) else { return nil }
                m.value = .floatValue(Float(value))
            case .boolean: m.value = .booleanValue(value != 0)
            default: m.value = .doubleValue(value)
            }
        }
        var p = SparkplugBPayload()
        p.timestamp = timestampMs
        p.metrics = [m]
        return try? p.serializedBytes()
    }

    /// The payload of an action's Sparkplug write from its rendered value (the decimal text the
    /// write's `{{value}}` renders to); nil when the text is not a number or does not fit.
    public static func payload(_ write: SparkplugWrite, rendered: [UInt8], timestampMs: UInt64 = currentMs()) -> [UInt8]? {
        guard let v = Double(String(decoding: rendered, as: UTF8.self)) else { return nil }
        return payload(write, value: v, timestampMs: timestampMs)
    }

    /// Milliseconds since 1970 (Sparkplug timestamps are UTC milliseconds).
    public static func currentMs() -> UInt64 {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }
}
