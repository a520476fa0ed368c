// Signals from Sparkplug B metrics: births establish names, aliases and datatypes; data
// messages carry values; deaths, sequence gaps and unknown aliases make the signals stale at
// once (and the last two ask the edge node for a rebirth). docs/mapping.md, "Sparkplug B signals".
import EdgeQTopicMap
import SwiftProtobuf

/// The edge nodes and devices a mapping reads metrics from, and which signal each metric name
/// feeds. Immutable: made once per mapping, shared by the thread that decodes messages (off the
/// decision lock) and the one that applies them.
public struct SparkplugLayout: Sendable {
    /// One edge node the mapping reads from.
    public struct Node: Sendable {
        /// Group id.
        public let group: String
        /// Edge node id.
        public let node: String
        /// Device ids with mapped metrics, in first-use order.
        public let devices: [String]
        /// Per scope (0: the node itself, 1 + d: device d): metric name → signal index.
        let names: [[String: Int]]
        /// The signals of the node and its devices.
        let signals: [Int]
        /// Per scope: the signals of that scope.
        let scopeSignals: [[Int]]
    }

    /// The edge nodes, in first-use order.
    public let nodes: [Node]
    /// How many signals the mapping has (the size of per-signal tables).
    let signalCount: Int

    /// The layout of `map`'s Sparkplug signals (empty when it has none).
    public init(map: TopicMap) {
        signalCount = map.signals.count
        var keys: [String] = []
        var byKey: [String: (group: String, node: String, devices: [String], entries: [(device: String?, metric: String, signal: Int)])] = [:]
        for i in map.sparkplugSignals {
            guard let s = map.signals[i].sparkplug else { continue }
            let key = s.group + "/" + s.node
            if byKey[key] == nil { keys.append(key); byKey[key] = (s.group, s.node, [], []) }
            if let d = s.device, byKey[key]?.devices.contains(d) == false { byKey[key]?.devices.append(d) }
            byKey[key]?.entries.append((s.device, s.metric, i))
        }
        nodes = keys.compactMap { k in
            guard let n = byKey[k] else { return nil }
            var names = [[String: Int]](repeating: [:], count: 1 + n.devices.count)
            var scopeSignals = [[Int]](repeating: [], count: 1 + n.devices.count)
            for e in n.entries {
                let scope = e.device.flatMap { d in n.devices.firstIndex(of: d).map { $0 + 1 } } ?? 0
                names[scope][e.metric] = e.signal
                scopeSignals[scope].append(e.signal)
            }
            return Node(group: n.group, node: n.node, devices: n.devices, names: names,
                        signals: n.entries.map(\.signal), scopeSignals: scopeSignals)
        }
    }

    /// True when the mapping reads no Sparkplug metric.
    public var isEmpty: Bool { nodes.isEmpty }

    /// The topic filters to subscribe to: each edge node's messages and its devices'.
    public var subscriptions: [String] {
        nodes.flatMap { ["\(SparkplugTopic.namespace)/\($0.group)/+/\($0.node)", "\(SparkplugTopic.namespace)/\($0.group)/+/\($0.node)/+"] }
    }

    /// True when `topic` is in the Sparkplug B namespace (whether or not the mapping reads it).
    public static func isSparkplug(_ topic: String) -> Bool {
        topic.utf8.starts(with: "spBv1.0/".utf8)
    }

    /// Which message of which edge node (and device) `topic` is; nil when it is not a Sparkplug
    /// B message of a node the mapping reads. Allocates nothing.
    public func classify(topic: String) -> (type: SparkplugMessageType, node: Int, device: Int)? {
        guard let l = SparkplugTopic.levels(topic) else { return nil }
        var found: (SparkplugMessageType, Int, Int)?
        topic.utf8.withContiguousStorageIfAvailable { b in
            var type: SparkplugMessageType?
            for t in SparkplugMessageType.allCases where bytesEqual(b, l.range(2), t.rawValue) { type = t; break }
            guard let type, type.isDevice == (l.count == 5) else { return }
            for (ni, n) in nodes.enumerated() where bytesEqual(b, l.range(1), n.group) && bytesEqual(b, l.range(3), n.node) {
                var device = -1
                if type.isDevice {
                    device = SparkplugInbound.unmappedDevice
                    for (di, d) in n.devices.enumerated() where bytesEqual(b, l.range(4), d) { device = di; break }
                }
                found = (type, ni, device)
                return
            }
        }
        return found
    }

    /// Classifies and decodes a message: the part of the work that allocates (protobuf), done
    /// before the decision lock is taken. Nil when the topic is not one the mapping reads.
    public func inbound(topic: String, payload: [UInt8]) -> SparkplugInbound? {
        guard let (type, node, device) = classify(topic: topic) else { return nil }
        switch type {
        case .ncmd, .dcmd: return nil   // commands to the node, not from it (ours among them)
        default: break
        }
        let decoded = try? SparkplugBPayload(serializedBytes: payload)
        return SparkplugInbound(type: type, node: node, device: device, payload: decoded)
    }
}

/// One Sparkplug B message of a node the mapping reads, decoded (off the decision lock).
public struct SparkplugInbound: Sendable {
    /// `device` of a device the mapping does not read (its messages still count in the
    /// node's sequence and its birth's aliases are known).
    public static let unmappedDevice = -2
    /// The message type.
    public let type: SparkplugMessageType
    /// Index into `SparkplugLayout.nodes`.
    public let node: Int
    /// Index into the node's `devices`; -1 for a node-level message; `unmappedDevice`.
    public let device: Int
    /// The decoded payload; nil when the bytes are not a Sparkplug B payload.
    public let payload: SparkplugBPayload?

    /// A message of `type` from node `node` (and `device`) with `payload` (for callers that
    /// decode themselves, such as tests).
    public init(type: SparkplugMessageType, node: Int, device: Int, payload: SparkplugBPayload?) {
        self.type = type
        self.node = node
        self.device = device
        self.payload = payload
    }
}

/// What the gateway must do after a Sparkplug message was applied.
public struct SparkplugEffect: Sendable, Equatable {
    /// Ask this edge node (index into `SparkplugLayout.nodes`) for a rebirth (NCMD
    /// `Node Control/Rebirth` = true).
    public var rebirth: Int?
    /// Why, for the log.
    public var reason: String?
    /// The message was refused as a whole (not a Sparkplug B payload).
    public var undecodable = false
}

/// The per-node session state of the Sparkplug signals: births, aliases, datatypes, sequence
/// numbers. Owned by the decision thread (inside the decision lock), like `SignalTable`.
/// Applying a decoded message allocates nothing in the steady state (NDATA/DDATA); a birth
/// rebuilds the node's alias table.
public struct SparkplugReceiver: Sendable {
    /// The layout it applies messages for.
    public let layout: SparkplugLayout
    let map: TopicMap

    struct NodeState: Sendable {
        var born = false
        var bdSeq: UInt64?
        /// The last sequence number seen (0…255); nil before the birth.
        var seq: UInt64?
        var deviceBorn: [Bool]
        /// alias → signal index, or -1 for a metric the mapping does not read.
        var aliases: [UInt64: Int] = [:]
        /// Monotonic time of the last rebirth request (0: none since the last birth).
        var rebirthAsked: UInt64 = 0
    }
    var nodes: [NodeState]
    /// Per signal: its metric's datatype from the last birth (0: unknown).
    var datatypes: [UInt32]
    /// A rebirth request is repeated at most this often while the node stays unborn (ns).
    public var rebirthInterval: UInt64 = 5_000_000_000

    /// Counters (for the gateway's metrics).
    public private(set) var births = 0
    /// Deaths applied (NDEATH with the current bdSeq, DDEATH).
    public private(set) var deaths = 0
    /// Rebirth requests asked for.
    public private(set) var rebirthRequests = 0
    /// Messages that were not Sparkplug B payloads.
    public private(set) var undecodable = 0

    /// A receiver for `map`'s Sparkplug signals, every node unborn (its signals missing).
    public init(map: TopicMap) {
        self.map = map
        layout = SparkplugLayout(map: map)
        nodes = layout.nodes.map { NodeState(deviceBorn: [Bool](repeating: false, count: $0.devices.count)) }
        datatypes = [UInt32](repeating: 0, count: map.signals.count)
    }

    /// Applies one decoded message to `table` at monotonic time `time` (ns).
    public mutating func apply(_ m: SparkplugInbound, time: UInt64, into table: inout SignalTable) -> SparkplugEffect {
        var effect = SparkplugEffect()
        let ni = m.node
        guard let p = m.payload else {
            undecodable += 1
            effect.undecodable = true
            if m.type != .ndeath && m.type != .ddeath {
                effect = lose(ni, time: time, reason: "a message that is not a Sparkplug B payload", into: &table)
                effect.undecodable = true
            }
            return effect
        }
        switch m.type {
        case .nbirth:
            births += 1
            var n = NodeState(deviceBorn: [Bool](repeating: false, count: layout.nodes[ni].devices.count))
            n.born = true
            n.seq = p.hasSeq ? p.seq % 256 : 0
            for metric in p.metrics {
                if metric.hasName, metric.name == "bdSeq" { n.bdSeq = Self.unsigned(metric) }
                if metric.hasAlias, metric.hasName { n.aliases[metric.alias] = layout.nodes[ni].names[0][metric.name] ?? -1 }
            }
            nodes[ni] = n
            // A new session: device signals wait for their DBIRTH.
            for s in layout.nodes[ni].signals { table.markStale(signal: s, time: time) }
            applyMetrics(p.metrics, node: ni, scope: 0, birth: true, time: time, into: &table)
        case .ndeath:
            // Only the death of the current session counts (an old session's Will may arrive late).
            if let b = nodes[ni].bdSeq, let dead = p.metrics.first(where: { $0.name == "bdSeq" }).flatMap(Self.unsigned), dead != b {
                return effect
            }
            deaths += 1
            nodes[ni].born = false
            nodes[ni].seq = nil
            for d in nodes[ni].deviceBorn.indices { nodes[ni].deviceBorn[d] = false }
            for s in layout.nodes[ni].signals { table.markStale(signal: s, time: time) }
        case .dbirth, .ddeath, .ndata, .ddata:
            guard nodes[ni].born else {
                return lose(ni, time: time, reason: "\(m.type.rawValue) before the node's birth", into: &table)
            }
            guard let last = nodes[ni].seq, p.hasSeq, p.seq % 256 == (last + 1) % 256 else {
                return lose(ni, time: time, reason: "a gap in the sequence numbers", into: &table)
            }
            nodes[ni].seq = p.seq % 256
            let scope = m.device >= 0 ? m.device + 1 : (m.device == -1 ? 0 : -1)
            switch m.type {
            case .dbirth:
                births += 1
                for metric in p.metrics where metric.hasAlias && metric.hasName {
                    nodes[ni].aliases[metric.alias] = scope >= 0 ? (layout.nodes[ni].names[scope][metric.name] ?? -1) : -1
                }
                guard scope > 0 else { return effect }
                nodes[ni].deviceBorn[scope - 1] = true
                for s in layout.nodes[ni].scopeSignals[scope] { table.markStale(signal: s, time: time) }
                applyMetrics(p.metrics, node: ni, scope: scope, birth: true, time: time, into: &table)
            case .ddeath:
                guard scope > 0 else { return effect }
                deaths += 1
                nodes[ni].deviceBorn[scope - 1] = false
                for s in layout.nodes[ni].scopeSignals[scope] { table.markStale(signal: s, time: time) }
            default:
                if scope > 0, !nodes[ni].deviceBorn[scope - 1] {
                    return lose(ni, time: time, reason: "DDATA from device '\(layout.nodes[ni].devices[scope - 1])' before its birth", into: &table)
                }
                if scope < 0 {
                    // An unmapped device: only its aliases must be known.
                    for metric in p.metrics where metric.hasAlias && !metric.hasName && nodes[ni].aliases[metric.alias] == nil {
                        return lose(ni, time: time, reason: "an unknown alias \(metric.alias)", into: &table)
                    }
                    return effect
                }
                if let unknown = applyMetrics(p.metrics, node: ni, scope: scope, birth: false, time: time, into: &table) {
                    return lose(ni, time: time, reason: "an unknown alias \(unknown)", into: &table)
                }
            }
        case .ncmd, .dcmd:
            break
        }
        return effect
    }

    /// The node's signals become stale until its next birth, and a rebirth is asked for
    /// (at most once per `rebirthInterval`).
    mutating func lose(_ ni: Int, time: UInt64, reason: String, into table: inout SignalTable) -> SparkplugEffect {
        nodes[ni].born = false
        nodes[ni].seq = nil
        for s in layout.nodes[ni].signals { table.markStale(signal: s, time: time) }
        var e = SparkplugEffect()
        if nodes[ni].rebirthAsked == 0 || time &- nodes[ni].rebirthAsked >= rebirthInterval {
            nodes[ni].rebirthAsked = max(time, 1)
            rebirthRequests += 1
            e.rebirth = ni
            e.reason = reason
        }
        return e
    }

    /// Stores the values of the metrics of scope `scope` that feed signals. On a birth, also
    /// records each metric's datatype. Returns the first alias that no birth announced (a data
    /// message only), after which nothing is stored.
    @discardableResult
    mutating func applyMetrics(_ metrics: [SparkplugBPayload.Metric], node ni: Int, scope: Int, birth: Bool,
                               time: UInt64, into table: inout SignalTable) -> UInt64? {
        let names = layout.nodes[ni].names[scope]
        for metric in metrics {
            var signal: Int?
            if metric.hasName {
                signal = names[metric.name]
            } else if metric.hasAlias {
                guard let s = nodes[ni].aliases[metric.alias] else { return metric.alias }
                signal = s >= 0 ? s : nil
            }
            guard let s = signal else { continue }
            if birth || metric.hasDatatype { datatypes[s] = metric.datatype }
            store(metric, signal: s, time: time, into: &table)
        }
        return nil
    }

    /// Converts one metric's value by its datatype and stores it into signal `s`.
    func store(_ metric: SparkplugBPayload.Metric, signal s: Int, time: UInt64, into table: inout SignalTable) {
        if metric.isNull {
            table.reject(signal: s, .missingField, time: time)
            return
        }
        guard let value = metric.value else {
            table.reject(signal: s, .missingField, time: time)
            return
        }
        let type = SparkplugBDataType(rawValue: Int(datatypes[s])) ?? .unknown
        switch value {
        case .intValue(let u):
            let v: Double
            switch type {
            case .int8: v = Double(Int8(truncatingIfNeeded: u))
            case .int16: v = Double(Int16(truncatingIfNeeded: u))
            case .int32: v = Double(Int32(bitPattern: u))
            default: v = Double(u)
            }
            map.store(raw: v, signal: s, time: time, into: &table)
        case .longValue(let u):
            map.store(raw: type == .int64 ? Double(Int64(bitPattern: u)) : Double(u), signal: s, time: time, into: &table)
        case .floatValue(let f): map.store(raw: Double(f), signal: s, time: time, into: &table)
        case .doubleValue(let d): map.store(raw: d, signal: s, time: time, into: &table)
        case .booleanValue(let b): map.store(raw: b ? 1 : 0, signal: s, time: time, into: &table)
        case .stringValue(let text):
            var t = text
            t.withUTF8 { map.store(text: UnsafeRawBufferPointer($0), signal: s, time: time, into: &table) }
        default:
            table.reject(signal: s, .wrongType, time: time)
        }
    }

    /// A metric's unsigned integer value (bdSeq), whichever integer field carries it.
    static func unsigned(_ m: SparkplugBPayload.Metric) -> UInt64? {
        switch m.value {
        case .intValue(let u): return UInt64(u)
        case .longValue(let u): return u
        default: return nil
        }
    }

    /// Whether edge node `node` (index into `layout.nodes`) is born (its signals can be valid).
    public func isBorn(node: Int) -> Bool { nodes[node].born }
}
