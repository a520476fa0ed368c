import EdgeQTopicMap
import Foundation
import Testing

let decodeMapping = """
gateway: {id: d, max_payload: 256}
signals:
  - {name: t, topic: s/json, json: temp, range: [-50, 150]}
  - {name: n, topic: s/json, json: "a.b[1].c"}
  - {name: on, topic: s/json, json: on, type: bool}
  - {name: mode, topic: s/json, json: mode, type: enum, values: {auto: 1, hand: 0}}
  - {name: raw, topic: s/raw, scale: 0.1, range: [0, 100]}
  - {name: flag, topic: s/flag, type: bool}
  - {name: dev, topic: dev/+/v, range: [0, 10]}
  - {name: word, topic: s/word, type: enum, values: {low: 1, high: 2}}
state:
  features:
    - {signal: t}
tick: {trigger: s/json}
reward: t
actions:
  list:
    - {name: a, publish: {topic: out/a, payload: "1"}}
"""

func decode(_ map: TopicMap, _ table: inout SignalTable, _ topic: String, _ payload: String, time: UInt64 = 1) {
    var bytes = Array(payload.utf8)
    if bytes.isEmpty { bytes.reserveCapacity(1) }
    bytes.withUnsafeBytes { _ = map.decode(topic: topic, payload: $0, time: time, into: &table) }
}

@Suite struct DecoderTests {
    let map: TopicMap
    init() throws { map = try TopicMap.parse(yaml: decodeMapping) }

    func index(_ name: String) -> Int { map.signalIndex(named: name) ?? -1 }

    @Test func goodPayloadsGiveValues() {
        var table = SignalTable(for: map)
        decode(map, &table, "s/json", #"{"temp": 21.5, "a":{"b":[0,{"c":-3e2}]}, "on": true, "mode":"hand", "other":[1,{"x":null}]}"#)
        #expect(table.values[index("t")] == 21.5)
        #expect(table.values[index("n")] == -300)
        #expect(table.values[index("on")] == 1)
        #expect(table.values[index("mode")] == 0)
        #expect(table.status(of: index("t")) == .valid)
        decode(map, &table, "s/raw", " 123\n")
        #expect(abs(table.values[index("raw")] - 12.3) < 1e-12)
        decode(map, &table, "s/flag", "on")
        #expect(table.values[index("flag")] == 1)
        decode(map, &table, "dev/3/v", "5")
        #expect(table.values[index("dev")] == 5)
        decode(map, &table, "s/word", "\"high\"")
        #expect(table.values[index("word")] == 2)
        decode(map, &table, "elsewhere", "1")
        #expect(table.unroutedMessages == 1)
        for r in DecodeFailure.allCases { #expect(table.count(r) == 0) }
    }

    /// Keys named once per object are fine, however many there are and wherever the same
    /// name appears in other objects; a repeat is found in a big object as well, among keys the
    /// mapping reads (exact) and among the others.
    @Test func duplicateKeysAreFoundOnlyWithinOneObject() {
        var table = SignalTable(for: map)
        let t = index("t")
        // The same names in sibling and nested objects, escapes compared as written.
        decode(map, &table, "s/json", #"{"temp":21,"x":{"temp":1,"x":2},"y":[{"x":1},{"x":2}],"te\u006dp":3}"#)
        #expect(table.status(of: t) == .valid)
        #expect(table.values[t] == 21)
        // 2,000 distinct keys (the hash filter hits often, the key stack overflows): accepted.
        let ex = JSONExtractor(paths: [[.key("temp")]])
        var cap = JSONCapture()
        func scan(_ text: String) -> JSONExtractor.Outcome {
            Array(text.utf8).withUnsafeBytes { ex.scan($0, into: &cap) }
        }
        func keys(_ n: Int) -> String { (0..<n).map { #""k\#($0)":\#($0)"# }.joined(separator: ",") }
        #expect(scan(#"{"temp":5,\#(keys(2000))}"#) == .valid)
        #expect(cap.number == 5)
        // An unread key repeated among 120 (exact: they fit the key stack), and the read key
        // repeated after 2,000 (exact for keys the mapping reads, however many there are).
        #expect(scan(#"{"temp":5,\#(keys(120)),"k17":0}"#) == .duplicateKey)
        #expect(scan(#"{"temp":5,\#(keys(120)),"k120":0}"#) == .valid)
        #expect(scan(#"{"temp":5,\#(keys(2000)),"temp":6}"#) == .duplicateKey)
        #expect(Array(#"{"temp":5,"temp":6}"#.utf8).withUnsafeBytes { ex.extract($0, into: &cap) } == false)
        // The key stack fits the 1,024 bytes Swift places on the stack without asking glibc for
        // the thread's stack bounds (which mallocs: `edgeq bench decode` counted one allocation
        // per message with 512 keys).
        #expect(JSONExtractor.keyStackCapacity * MemoryLayout<UInt64>.stride <= 1024)
        // Invalid JSON stays invalid, even with a repeat before the error.
        #expect(scan(#"{"temp":5,"temp":6,}"#) == .duplicateKey)
        #expect(scan(#"{"temp":5,"x":6,}"#) == .invalid)
        // The counter the gateway exports: every signal of the topic is marked.
        var fresh = SignalTable(for: map)
        decode(map, &fresh, "s/json", #"{"temp":20,"temp":21}"#)
        #expect(fresh.count(.duplicateKey) == 4)
        #expect(fresh.status(of: t) == .invalid(.duplicateKey))
        #expect(DecodeFailure.duplicateKey.metricName == "duplicate_key")
    }

    /// At least 20 bad inputs, each with the reason it is rejected.
    @Test(arguments: [
        ("s/json", #"{"temp": 20"#, "t", DecodeFailure.invalidJSON),          // not closed
        ("s/json", #"{"temp": 20,}"#, "t", .invalidJSON),                     // trailing comma
        ("s/json", #"{temp: 20}"#, "t", .invalidJSON),                        // unquoted key
        ("s/json", #"{"temp":01}"#, "t", .invalidJSON),                       // leading zero
        ("s/json", #"{"temp":20} x"#, "t", .invalidJSON),                     // trailing garbage
        ("s/json", #"{"temp":-}"#, "t", .invalidJSON),                        // bare minus
        ("s/json", "{\"temp\":\"a\u{01}\"}", "t", .invalidJSON),              // control character in a string
        ("s/json", #"{"x":"\q","temp":1}"#, "t", .invalidJSON),               // bad escape
        ("s/json", String(repeating: "[", count: 100) + String(repeating: "]", count: 100), "t", .invalidJSON), // too deep
        ("s/json", "", "t", .invalidJSON),                                   // empty
        ("s/json", #"{"mode":"auto"}"#, "t", .missingField),
        ("s/json", #"{"a":{"b":[0]}}"#, "n", .missingField),                  // index beyond the array
        ("s/json", #"{"a":{"b":{"1":{"c":2}}}}"#, "n", .missingField),        // an object where an array was expected
        ("s/json", #"{"temp":"20"}"#, "t", .wrongType),                       // a string for a number
        ("s/json", #"{"temp":null}"#, "t", .wrongType),
        ("s/json", #"{"temp":[20]}"#, "t", .wrongType),
        ("s/json", #"{"on":"yes"}"#, "on", .wrongType),
        ("s/json", #"{"mode":1}"#, "mode", .wrongType),
        ("s/json", #"{"temp":1e400}"#, "t", .nonFinite),                      // overflows a Double
        ("s/json", #"{"temp":200}"#, "t", .outOfRange),
        ("s/json", #"{"temp":-50.5}"#, "t", .outOfRange),
        ("s/json", #"{"temp":1,"pad":""# + String(repeating: "x", count: 300) + #""}"#, "t", .oversize),
        ("s/json", #"{"mode":"manual"}"#, "mode", .unknownEnumValue),
        ("s/json", #"{"mode":"au\u0074o"}"#, "mode", .unknownEnumValue),      // escapes are not decoded
        ("s/raw", "abc", "raw", .notANumber),
        ("s/raw", "", "raw", .notANumber),
        ("s/raw", "12 34", "raw", .notANumber),
        ("s/raw", "0x10", "raw", .notANumber),
        ("s/raw", "NaN", "raw", .nonFinite),
        ("s/raw", "-inf", "raw", .nonFinite),
        ("s/raw", "2000", "raw", .outOfRange),                                // 2000 × 0.1 = 200 > 100
        ("s/flag", "maybe", "flag", .notANumber),
        ("dev/7/v", "11", "dev", .outOfRange),
        ("s/word", "medium", "word", .unknownEnumValue),
        ("s/json", #"{"temp":20,"temp":80}"#, "t", .duplicateKey),            // a key the mapping reads, twice
        ("s/json", #"{"temp":20, "on":true, "temp" :20}"#, "t", .duplicateKey), // twice with the same value
        ("s/json", #"{"a":{"b":[0,{"c":1,"c":2}]}}"#, "n", .duplicateKey),     // twice in a nested object
        ("s/json", #"{"a":{"b":[0,{"c":1}]},"a":{"b":[0,{"c":2}]}}"#, "n", .duplicateKey), // a path's inner key
        ("s/json", #"{"temp":20,"x":1,"y":{},"x":2}"#, "t", .duplicateKey),  // a key nobody reads, twice
        ("s/json", #"{"temp":20,"other":[{"k":1,"k":1}]}"#, "t", .duplicateKey), // deep inside an unread value
    ] as [(String, String, String, DecodeFailure)])
    func badPayloadIsRejectedWithItsReason(topic: String, payload: String, signal: String, reason: DecodeFailure) {
        var table = SignalTable(for: map)
        // A valid value first, so we see it replaced by an invalid mark.
        decode(map, &table, "s/json", #"{"temp":1,"a":{"b":[0,{"c":1}]},"on":false,"mode":"auto"}"#)
        decode(map, &table, "s/raw", "1")
        decode(map, &table, "s/flag", "1")
        decode(map, &table, "dev/1/v", "1")
        decode(map, &table, "s/word", "low")
        let before = table.count(reason)
        decode(map, &table, topic, payload, time: 2)
        let i = index(signal)
        #expect(table.status(of: i) == .invalid(reason), "\(payload.prefix(60)) → \(table.status(of: i))")
        #expect(table.values[i].isNaN)
        #expect(table.times[i] == 2)
        #expect(table.count(reason) > before)
    }
}

let runtimeMapping = """
gateway: {id: r}
signals:
  - {name: temp, topic: p/s, json: temp, range: [-50, 150], max_age: 10s}
  - {name: sp, topic: p/s, json: sp}
  - {name: id, topic: p/s, json: id}
  - {name: level, topic: p/s, json: level}
  - {name: hand, topic: p/hand, type: bool}
state:
  history: 2
  features:
    - {signal: temp, normalize: [0, 40]}
    - {name: err, expr: temp - sp, normalize: learned}
    - {name: h, cyclic: level, period: 4}
tick: {trigger: p/s}
reward: -abs(err) / (level - 2)
terminal: temp > 100
actions:
  min_dwell: 2
  fallback: keep
  list:
    - name: keep
      publish: {topic: p/cmd, payload: '{"id":{{id}},"a":{{action}},"n":"{{action_name}}"}'}
      incumbent_value: 0
    - name: up
      publish:
        - {topic: p/cmd, payload: '{"level":{{value}}}', step: 1, from: level, min: 0, max: 4}
        - {topic: p/log, payload: 'temp {{temp}}', qos: 0, retain: true}
      allowed: temp < 30
      incumbent_value: 1
    - name: set
      publish: {topic: p/cmd, payload: '{{value}}', value: sp / 3}
      incumbent_value: 3
incumbent: {topic: p/inc, json: cmd.level, max_distance: 0.6}
safety: {hand_override: hand, ood_margin: 0.5}
"""

@Suite struct RuntimeTests {
    let map: TopicMap
    init() throws { map = try TopicMap.parse(yaml: runtimeMapping) }

    func state(_ rt: inout TopicMapRuntime, _ table: SignalTable, now: UInt64 = 1_000_000_000) -> ([Float], StateStatus) {
        var out = [Float](repeating: .nan, count: map.stateWidth)
        let s = out.withUnsafeMutableBufferPointer { rt.assembleState(from: table, now: now, wallClock: 0, into: $0) }
        return (out, s)
    }

    @Test func stateVectorWithNormalisationHistoryAndCyclicFeatures() {
        #expect(map.featureWidth == 4)
        #expect(map.stateWidth == 8)
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/s", #"{"temp":30,"sp":20,"id":7,"level":1}"#)
        decode(map, &table, "p/hand", "false")
        let (v1, s1) = state(&rt, table)
        #expect(s1 == .ok)
        #expect(v1[0] == 0.5)                   // 30 in [0, 40] → 0.5
        #expect(v1[1] == 10)                    // learned, no statistics yet: as is
        #expect(abs(v1[2] - 1) < 1e-6)          // sin(2π·1/4)
        #expect(abs(v1[3]) < 1e-6)              // cos(2π·1/4)
        #expect(Array(v1[4..<8]) == Array(v1[0..<4]))   // history not full: the oldest is repeated
        decode(map, &table, "p/s", #"{"temp":10,"sp":20,"id":8,"level":2}"#)
        rt.setLearnedStatistics(mean: [0, 5, 0, 0], std: [1, 2, 1, 1])
        let (v2, s2) = state(&rt, table)
        #expect(s2 == .ok)
        #expect(v2[0] == -0.5)
        #expect(v2[1] == -7.5)                  // (-10 - 5) / 2
        #expect(Array(v2[4..<8]) == Array(v1[0..<4]))   // previous tick second
        rt.resetHistory()
        let (v3, _) = state(&rt, table)
        #expect(Array(v3[4..<8]) == Array(v3[0..<4]))
    }

    @Test func safetyStatuses() {
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/hand", "false")
        #expect(state(&rt, table).1 == .invalid(signal: 0))   // nothing received yet
        decode(map, &table, "p/s", #"{"temp":30,"sp":20,"id":7,"level":1}"#, time: 1_000_000_000)
        #expect(state(&rt, table, now: 5_000_000_000).1 == .ok)
        #expect(state(&rt, table, now: 12_000_000_000).1 == .stale(signal: 0))
        decode(map, &table, "p/s", #"{"temp":70,"sp":20,"id":7,"level":1}"#, time: 1_000_000_000)
        #expect(state(&rt, table).1 == .outOfDistribution(feature: 0))   // 70 → 2.5 > 1.5
        decode(map, &table, "p/s", #"{"temp":"x","sp":20,"id":7,"level":1}"#)
        #expect(state(&rt, table).1 == .invalid(signal: 0))
        decode(map, &table, "p/hand", "on")
        #expect(state(&rt, table).1 == .handOverride)
        #expect(StateStatus.handOverride.response(map.safety) == .hold)
        #expect(StateStatus.stale(signal: 0).response(map.safety) == .fallback)
        #expect(map.fallbackAction == 0)
    }

    @Test func rewardTerminalAndInvalidExpressions() {
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/hand", "0")
        decode(map, &table, "p/s", #"{"temp":30,"sp":20,"id":7,"level":1}"#)
        _ = state(&rt, table)
        #expect(rt.reward() == 10)              // -10 / (1 - 2)
        #expect(rt.terminal() == false)
        #expect(rt.truncated() == false)        // no truncated expression
        decode(map, &table, "p/s", #"{"temp":30,"sp":20,"id":7,"level":2}"#)
        _ = state(&rt, table)
        #expect(rt.reward() == nil)             // division by zero: invalid, counted
        #expect(rt.invalidExpressionCount == 1)
        decode(map, &table, "p/s", #"{"temp":120,"sp":20,"id":7,"level":1}"#)
        rt.refresh(from: table, now: 1)
        #expect(rt.terminal() == true)
    }

    @Test func actionMaskWithAllowedAndDwell() {
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/hand", "0")
        decode(map, &table, "p/s", #"{"temp":35,"sp":20,"id":7,"level":1}"#)
        _ = state(&rt, table)
        var mask = [Bool](repeating: false, count: 3)
        var n = mask.withUnsafeMutableBufferPointer { rt.actionMask(into: $0) }
        #expect(mask == [true, false, true])    // up needs temp < 30
        #expect(n == 2)
        decode(map, &table, "p/s", #"{"temp":25,"sp":20,"id":7,"level":1}"#)
        _ = state(&rt, table)
        rt.recordApplied(action: 2)
        n = mask.withUnsafeMutableBufferPointer { rt.actionMask(into: $0) }
        #expect(mask == [false, false, true])   // dwell: 0 ticks since the change
        rt.recordApplied(action: nil)
        _ = mask.withUnsafeMutableBufferPointer { rt.actionMask(into: $0) }
        #expect(mask == [false, false, true])   // 1 tick
        rt.recordApplied(action: 2)
        _ = mask.withUnsafeMutableBufferPointer { rt.actionMask(into: $0) }
        #expect(mask == [true, true, true])     // 2 ticks: free again
    }

    @Test func writesRenderTemplates() throws {
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/hand", "0")
        decode(map, &table, "p/s", #"{"temp":21.25,"sp":20,"id":12345,"level":4}"#)
        _ = state(&rt, table)
        let keepW = rt.writes(for: 0)
        let keep = try #require(keepW)
        #expect(keep == [ActuatorWrite(topic: "p/cmd", payload: Array(#"{"id":12345,"a":0,"n":"keep"}"#.utf8), qos: 1, retain: false)])
        let upW = rt.writes(for: 1)
        let up = try #require(upW)
        #expect(up.count == 2)
        #expect(String(decoding: up[0].payload, as: UTF8.self) == #"{"level":4}"#)   // clamp(4 + 1, 0, 4)
        #expect(String(decoding: up[1].payload, as: UTF8.self) == "temp 21.25")
        #expect(up[1].qos == 0 && up[1].retain)
        let setW = rt.writes(for: 2)
        let set = try #require(setW)
        #expect(String(decoding: set[0].payload, as: UTF8.self) == "6.666667")
        var buffer: [UInt8] = []
        buffer.reserveCapacity(64)
        #expect(rt.render(action: 1, write: 0, into: &buffer))
        #expect(String(decoding: buffer, as: UTF8.self) == #"{"level":4}"#)
        decode(map, &table, "p/s", #"{"temp":21,"sp":20,"id":1,"level":"bad"}"#)
        rt.refresh(from: table, now: 1)
        #expect(rt.writes(for: 1) == nil)       // the step's `from` is invalid: hold
    }

    /// `{{model}}` writes the version of the model that chose the action, or `null`; a signal
    /// named `model` makes it an error; a handover payload refuses it.
    @Test func theModelPlaceholderWritesTheChoosingVersion() throws {
        func mapping(_ payload: String, extraSignal: String = "") -> String {
            """
            gateway: {id: m}
            signals:
              - {name: step, topic: p/s, json: step}
              - {name: t, topic: p/s, json: t, range: [0, 10]}
            \(extraSignal)
            state: {features: [{signal: t}]}
            tick: {trigger: p/s}
            reward: -t
            actions:
              list:
                - {name: a0, publish: {topic: p/cmd, payload: '\(payload)', value: 0}}
                - {name: a1, publish: {topic: p/cmd, payload: '\(payload)', value: 1}}
            """
        }
        let map = try TopicMap.parse(yaml: mapping(#"{"a":{{value}},"step":{{step}},"model":{{model}}}"#), file: "m.yaml")
        var table = SignalTable(for: map)
        var rt = TopicMapRuntime(map: map)
        decode(map, &table, "p/s", #"{"step":41,"t":3}"#)
        var out = [Float](repeating: .nan, count: map.stateWidth)
        _ = out.withUnsafeMutableBufferPointer { rt.assembleState(from: table, now: 1_000_000_000, wallClock: 0, into: $0) }
        var buffer: [UInt8] = []
        #expect(rt.render(action: 1, write: 0, into: &buffer, model: 7))
        #expect(String(decoding: buffer, as: UTF8.self) == #"{"a":1,"step":41,"model":7}"#)
        buffer.removeAll()
        #expect(rt.render(action: 0, write: 0, into: &buffer))
        #expect(String(decoding: buffer, as: UTF8.self) == #"{"a":0,"step":41,"model":null}"#)
        do {
            _ = try TopicMap.parse(yaml: mapping(#"{"a":{{value}},"m":{{model}}}"#, extraSignal: "  - {name: model, topic: p/s, json: m}"), file: "m.yaml")
            Issue.record("a signal named model and {{model}} accepted")
        } catch {
            #expect("\(error)".contains("a signal or feature is also named 'model'"), "\(error)")
        }
    }

    @Test func incumbentCommandMapsToTheNearestAction() {
        func inc(_ topic: String, _ payload: String) -> Int? {
            Array(payload.utf8).withUnsafeBytes { map.incumbentAction(topic: topic, payload: $0) }
        }
        #expect(inc("p/inc", #"{"cmd":{"level":0.2}}"#) == 0)
        #expect(inc("p/inc", #"{"cmd":{"level":1.4}}"#) == 1)
        #expect(inc("p/inc", #"{"cmd":{"level":3}}"#) == 2)
        #expect(inc("p/inc", #"{"cmd":{"level":2}}"#) == nil)   // farther than max_distance
        #expect(inc("p/inc", #"{"cmd":{"level":"x"}}"#) == nil)
        #expect(inc("p/inc", "not json") == nil)
        #expect(inc("p/other", #"{"cmd":{"level":1}}"#) == nil)
    }

    @Test func numbersAreFormattedCompactly() throws {
        let yaml = runtimeMapping.replacingOccurrences(of: "value: sp / 3", with: "value: sp")
        let m = try TopicMap.parse(yaml: yaml)
        var table = SignalTable(for: m)
        var rt = TopicMapRuntime(map: m)
        for (sp, text) in [("20", "20"), ("-0.5", "-0.5"), ("0.1", "0.1"), ("1e-9", "0"), ("-1e-9", "0"), ("123456.789", "123456.789"), ("1e20", "1e+20")] {
            decode(m, &table, "p/s", #"{"temp":20,"sp":\#(sp),"id":1,"level":1}"#)
            rt.refresh(from: table, now: 1)
            let wW = rt.writes(for: 2)
        let w = try #require(wW)
            #expect(String(decoding: w[0].payload, as: UTF8.self) == text, "\(sp)")
        }
    }
}

@Suite struct RoutingTests {
    @Test func exactTopicsAndPlusFiltersAreRouted() throws {
        let map = try TopicMap.parse(yaml: decodeMapping)
        #expect(map.routeIndex(topic: "s/json") != nil)
        #expect(map.routeIndex(topic: "dev/1/v") == nil)          // only through the `+` filter
        #expect(map.isTrigger(topic: "s/json"))
        #expect(!map.isTrigger(topic: "s/raw"))
        #expect(map.subscribedTopics.contains("dev/+/v"))
        var table = SignalTable(for: map)
        for (topic, routed) in [("dev/1/v", true), ("dev/1/v/x", false), ("dev/v", false), ("dev//v", true), ("s/json/x", false)] {
            var t = table
            let n = Array("1".utf8).withUnsafeBytes { map.decode(topic: topic, payload: $0, time: 1, into: &t) }
            #expect((n > 0) == routed, "\(topic)")
        }
        // A known route index decodes the same as the topic.
        let r = try #require(map.routeIndex(topic: "s/raw"))
        Array("55".utf8).withUnsafeBytes { map.decode(route: r, payload: $0, time: 1, into: &table) }
        #expect(table.values[map.signalIndex(named: "raw") ?? -1] == 5.5)
    }
}

@Suite struct NumberTests {
    /// Numbers in JSON and raw payloads against Swift's own parser.
    @Test func numbersMatchSwiftsParser() throws {
        let map = try TopicMap.parse(yaml: """
        gateway: {id: n}
        signals:
          - {name: j, topic: n/json, json: v}
          - {name: r, topic: n/raw}
        state: {features: [{signal: j}]}
        tick: {period: 1}
        reward: j
        actions: {list: [{name: a}]}
        """)
        var table = SignalTable(for: map)
        let texts = ["0", "-0", "1", "-1", "21.5", "0.001", "1e3", "1E-3", "-2.5e+2", "123456789012345678901234",
                     "0.1", "3.14159265358979", "1e22", "1e-22", "4.9e-300", "1.7976931348623157e308", "9007199254740993",
                     // Round-trip texts of 17 digits (what a plant printing doubles sends), and more digits
                     // than a double holds: decoded to the exact double the text denotes.
                     "0.30000000000000004", "-1.9999999999999998", "-1.0406249999999995", "23.4375", "2.2250738585072014e-308",
                     "5e-324", "0.1000000000000000055511151231257827", "12345678901234567890.123456789"]
        for t in texts {
            let want = try #require(Double(t))
            decode(map, &table, "n/json", "{\"v\":\(t)}")
            decode(map, &table, "n/raw", t)
            for s in 0..<2 {
                let got = table.values[s]
                #expect(got == want, "\(t): \(got) vs \(want)")
            }
        }
    }
}
