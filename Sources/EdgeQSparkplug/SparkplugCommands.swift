// Messages EdgeQ sends to Sparkplug B edge nodes: rebirth requests and metric writes (NCMD/DCMD).
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

    /// Milliseconds since 1970 (Sparkplug timestamps are UTC milliseconds).
    public static func currentMs() -> UInt64 {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }
}
