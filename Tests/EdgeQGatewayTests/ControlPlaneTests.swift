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
        #expect(try parse("retrain", #"{"steps":500,"seconds":2.5,"window":1000,"auth":{"t":1}}"#)?.command.get()
            == .retrain(steps: 500, seconds: 2.5, window: 1000))
        #expect(try parse("rollback", #"{"version":3}"#)?.command.get() == .rollback(version: "3"))
        #expect(try parse("promote", "{}")?.command.get() == .promote(version: nil))
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
