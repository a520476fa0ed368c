import EdgeQCore
import EdgeQGateway
import Foundation
import Testing

/// Control-plane requests: every malformed or unknown command gets ok:false with a
/// reason, never silence.
@Suite struct ControlPlaneTests {
    let plane = ControlPlane(prefix: "edgeq/gw1")

    func parse(_ verb: String, _ payload: String) -> ControlRequest? {
        plane.parse(topic: "edgeq/gw1/cmd/\(verb)", payload: Array(payload.utf8))
    }

    @Test func modeWithAndWithoutID() throws {
        let a = try #require(parse("mode", #"{"id":"42","mode":"control"}"#))
        #expect(a.id == .string("42"))
        #expect(try a.command.get() == .mode(.control))
        let b = try #require(parse("mode", #"{"mode":"shadow"}"#))
        #expect(b.id == nil)
        #expect(try b.command.get() == .mode(.shadow))
        let c = try #require(parse("mode", #"{"id":7,"mode":"shadow"}"#))
        #expect(c.id == .number(7))
    }

    @Test(arguments: [
        ("mode", #"{"mode":"auto"}"#, "'mode' must be"),
        ("mode", #"{}"#, "'mode' is required"),
        ("mode", #"{"mdoe":"control"}"#, "unknown key 'mdoe'"),
        ("mode", #"{"mode":"control""#, "malformed JSON"),
        ("mode", #"[1,2]"#, "must be a JSON object"),
        ("mode", #"not json"#, "malformed JSON"),
        ("retrain", #"{"steps":-3}"#, "'steps' must be a whole number"),
        ("retrain", #"{"steps":1.5}"#, "'steps' must be a whole number"),
        ("retrain", #"{"seconds":0}"#, "'seconds' must be a number greater than 0"),
        ("retrain", #"{"window":true}"#, "'window' must be a whole number"),
        ("promote", #"{"version":false}"#, "'version' must be"),
        ("launch", #"{"id":1}"#, "unknown verb 'launch'"),
    ])
    func refusedWithAReason(verb: String, payload: String, reason: String) throws {
        let r = try #require(parse(verb, payload))
        switch r.command {
        case .success(let c): Issue.record("accepted \(c) from \(payload)")
        case .failure(let e): #expect(e.description.contains(reason), "\(e.description)")
        }
    }

    @Test func retrainLimitsAndEmptyPayload() throws {
        #expect(try parse("retrain", "")?.command.get() == .retrain(steps: nil, seconds: nil, window: nil))
        #expect(try parse("retrain", #"{"steps":500,"seconds":2.5,"window":1000}"#)?.command.get()
            == .retrain(steps: 500, seconds: 2.5, window: 1000))
        // The signature wraps the command (docs/security.md); an `auth` inside it is no field.
        guard case .failure(let e)? = parse("retrain", #"{"steps":500,"auth":{"t":1}}"#)?.command else {
            Issue.record("an 'auth' key inside the command was accepted")
            return
        }
        #expect(e.description.contains("unknown key 'auth'"), "\(e)")
        #expect(try parse("rollback", #"{"version":3}"#)?.command.get() == .rollback(version: "3"))
        #expect(try parse("promote", "{}")?.command.get() == .promote(version: nil))
    }

    @Test func commandTopicsAreRecognisedWithoutParsing() {
        #expect(plane.isCommandTopic("edgeq/gw1/cmd/mode"))
        #expect(plane.verb(ofCommandTopic: "edgeq/gw1/cmd/mode") == "mode")
        for topic in ["edgeq/gw1/cmd/", "edgeq/gw1/cmd/a/b", "edgeq/gw1/status", "edgeq/gw2/cmd/mode", "edgeq/gw1/cmdx/mode", "plant/t/state"] {
            #expect(!plane.isCommandTopic(topic), "\(topic)")
            #expect(plane.verb(ofCommandTopic: topic) == nil)
        }
        #expect(ControlPlane.requestID(in: Array(#"{"id":"7","mode":"control"}"#.utf8)) == .string("7"))
        #expect(ControlPlane.requestID(in: Array("not json".utf8)) == nil)
    }

    @Test func notACommandTopic() {
        #expect(plane.parse(topic: "edgeq/gw1/status", payload: []) == nil)
        #expect(plane.parse(topic: "edgeq/gw2/cmd/mode", payload: []) == nil)
        #expect(plane.parse(topic: "edgeq/gw1/cmd/a/b", payload: []) == nil)
    }

    @Test func replyEchoesTheID() throws {
        let bytes = ControlPlane.reply(id: .string("x1"), ok: false, error: "no model")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(obj["id"] as? String == "x1")
        #expect(obj["ok"] as? Bool == false)
        #expect(obj["error"] as? String == "no model")
        let none = String(decoding: ControlPlane.reply(id: nil, ok: true), as: UTF8.self)
        #expect(none == #"{"id":null,"ok":true}"#)
    }
}

/// Hostile payloads on the command topics (anyone on the broker can publish there): random
/// bytes, mutated valid requests, deep nesting, huge numbers, odd verbs -- the parser must
/// answer every one (a command or a reason) and never crash. Seeded, well under a second.
@Suite struct ControlPlaneFuzzTests {
    let plane = ControlPlane(prefix: "edgeq/gw1")

    @Test func hostilePayloadsNeverCrashTheParser() throws {
        var g = SeededGenerator(seed: 23)
        let seeds = [#"{"id":"42","mode":"control"}"#, #"{"steps":1000,"seconds":30,"window":5000,"id":[1,{"a":null}]}"#,
                     #"{"version":"3"}"#, #"{"version":2,"id":1e308}"#, #"{}"#, #"{"mode":"shadow","auth":"x"}"#]
        let alphabet = Array(#"{}[]:,"\ 0123456789.eE+-truefalsnl"#.utf8) + [0, 0xff, 0xc3, 0x28]
        let verbs = ControlPlane.verbs + ["", "x", "mode/extra", "é", String(repeating: "v", count: 5000)]
        var answered = 0
        for i in 0..<3000 {
            var p = Array(seeds[i % seeds.count].utf8)
            switch i % 4 {
            case 0: p = (0..<Int(g.next() % 64)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            case 1, 2:
                for _ in 0..<(1 + Int(g.next() % 5)) {
                    let pos = p.isEmpty ? 0 : Int(g.next() % UInt64(p.count))
                    let c = alphabet[Int(g.next() % UInt64(alphabet.count))]
                    if g.next() % 2 == 0, !p.isEmpty { p[pos] = c } else { p.insert(c, at: pos) }
                }
            default:
                let n = ["1e400", "-0", "18446744073709551616", "9223372036854775807", "-9223372036854775808",
                         "1e-400", "NaN", "\"\\ud800\"", "0.5e9", "1000000000.0000001"][Int(g.next() % 10)]
                let key = ["steps", "seconds", "window", "version", "mode", "id"][Int(g.next() % 6)]
                p = Array("{\"\(key)\":\(n)}".utf8)
            }
            let verb = verbs[Int(g.next() % UInt64(verbs.count))]
            if let r = plane.parse(topic: "edgeq/gw1/cmd/\(verb)", payload: p) {
                if case .failure(let e) = r.command { #expect(!e.description.isEmpty) }
                answered += 1
            }
        }
        #expect(answered > 2000)
        for depth in [100, 10_000, 200_000] {
            let deep = Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8)
            let nested = Array(("{\"id\":" + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + ",\"mode\":\"shadow\"}").utf8)
            for p in [deep, nested] {
                let r = try #require(plane.parse(topic: "edgeq/gw1/cmd/mode", payload: p))
                if case .failure(let e) = r.command { #expect(!e.description.isEmpty) }
            }
        }
    }
}
