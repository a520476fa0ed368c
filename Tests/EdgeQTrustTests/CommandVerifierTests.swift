// One case per refusal reason of the signed-command envelope, each built to hit that reason
// (docs/security.md, "What is refused"), with real key files and a real data directory.
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Synchronization
import Testing

@Suite struct CommandVerifierTests {
    func reason(_ v: CommandVerdict) -> RefusalReason? {
        if case .refused(let r) = v { return r.reason }
        return nil
    }

    @Test func acceptsAGoodSignatureAndReturnsTheCommand() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let cmd = #"{"id":"1","mode":"control"}"#
        let verdict = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: try f.signed("mode", cmd), retained: false)
        guard case .accepted(let a) = verdict else { Issue.record("refused: \(verdict)"); return }
        #expect(a.key == "alice")
        #expect(a.role == .operator)
        #expect(a.command == Array(cmd.utf8))
        #expect(a.timestampMs != nil)
        #expect(v.acceptedCount == 1)
    }

    @Test func trainerKeySignsRetrainButNotMode() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let ok = v.verify(topic: TrustFixture.topic("retrain"), verb: "retrain", payload: try f.signed("retrain", #"{"id":"r"}"#, key: "tom"), retained: false)
        guard case .accepted(let a) = ok else { Issue.record("refused: \(ok)"); return }
        #expect(a.key == "tom" && a.role == .trainer)
        let mode = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: try f.signed("mode", #"{"mode":"control"}"#, key: "tom"), retained: false)
        #expect(reason(mode) == .wrongRole)
    }

    @Test func modelKeyCannotSignCommands() throws {
        let f = try TrustFixture()
        let verdict = try f.verifier().verify(topic: TrustFixture.topic("retrain"), verb: "retrain", payload: try f.signed("retrain", "{}", key: "mo"), retained: false)
        #expect(reason(verdict) == .wrongRole)
    }

    @Test func unsignedIsRefused() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        for body in [#"{"mode":"control"}"#, "", #"{"mode":"control","id":"x"}"#] {
            let verdict = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: Array(body.utf8), retained: false)
            #expect(reason(verdict) == .unsigned, "\(body): \(verdict)")
            if case .refused(let r) = verdict { #expect(r.message.contains("edgeq cmd")) }
        }
    }

    @Test func garbageAuthIsMalformed() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let good = envelope(try f.signed("mode", #"{"mode":"control"}"#))
        var badTs = good.auth; badTs["ts_ms"] = "yesterday"
        var shortSig = good.auth; shortSig["sig"] = "AAAA"
        var extra = good.auth; extra["hmac"] = "x"
        var badNonce = good.auth; badNonce["nonce"] = "short"
        let cases: [[UInt8]] = [
            Array(#"{"mode":"control","auth":"garbage"}"#.utf8),
            Array("not json".utf8),
            payload(cmd: ["mode": "control"], auth: good.auth),   // cmd not a string
            payload(cmd: good.cmd, auth: badTs),
            payload(cmd: good.cmd, auth: shortSig),
            payload(cmd: good.cmd, auth: extra),
            payload(cmd: good.cmd, auth: badNonce),
        ]
        for p in cases {
            let verdict = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: p, retained: false)
            #expect(reason(verdict) == .malformed, "\(String(decoding: p, as: UTF8.self)): \(verdict)")
        }
    }

    @Test func unknownKeyIsRefusedWithHowToTrustIt() throws {
        let f = try TrustFixture()
        let mallory = try f.untrustedKey("mallory")
        let p = try CommandEnvelope.sign(command: #"{"mode":"control"}"#, topic: TrustFixture.topic("mode"), gatewayID: TrustFixture.gatewayID,
                                         keyName: "mallory", privateKey: mallory)
        let verdict = try f.verifier().verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: p, retained: false)
        guard case .refused(let r) = verdict else { Issue.record("accepted"); return }
        #expect(r.reason == .unknownKey)
        #expect(r.key == "mallory")
        #expect(r.message.contains("keys/operator"))
    }

    @Test func badSignatureCases() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let topic = TrustFixture.topic("mode")
        // A forged key claiming alice's name.
        let forged = try CommandEnvelope.sign(command: #"{"mode":"control"}"#, topic: topic, gatewayID: TrustFixture.gatewayID,
                                              keyName: "alice", privateKey: try f.untrustedKey("eve"))
        // A valid command with its fields altered.
        let good = envelope(try f.signed("mode", #"{"mode":"shadow"}"#))
        let altered = payload(cmd: #"{"mode":"control"}"#, auth: good.auth)
        // Signed for another gateway, and for another verb.
        let otherGateway = try f.signed("mode", #"{"mode":"control"}"#, gatewayID: "gw2")
        let otherVerb = try f.signed("promote", #"{"mode":"control"}"#)
        for p in [forged, altered, otherGateway, otherVerb] {
            let verdict = v.verify(topic: topic, verb: "mode", payload: p, retained: false)
            #expect(reason(verdict) == .badSignature, "\(verdict)")
        }
        // A garbage signature of the right length.
        var zeros = good.auth
        zeros["sig"] = Data(count: 64).base64EncodedString()
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: payload(cmd: good.cmd, auth: zeros), retained: false)) == .badSignature)
        #expect(v.refusedCounts[.badSignature] == 5)
    }

    @Test func staleTimestampsBothWaysAreRefused() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let now = CommandEnvelope.nowMs()
        for ts in [now - 31_000, now + 31_000, now - 3_600_000] {
            let verdict = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: try f.signed("mode", "{}", timestampMs: ts), retained: false)
            #expect(reason(verdict) == .stale, "\(ts - now) ms: \(verdict)")
        }
        // Inside the window (either side) it is fine.
        for ts in [now - 20_000, now + 20_000] {
            let verdict = v.verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: try f.signed("mode", "{}", timestampMs: ts), retained: false)
            #expect(reason(verdict) == nil, "\(ts - now) ms: \(verdict)")
        }
    }

    @Test func windowIsConfigurable() throws {
        let f = try TrustFixture()
        var c = CommandVerifier.Configuration()
        c.windowSeconds = 5
        let verdict = try f.verifier(c).verify(topic: TrustFixture.topic("mode"), verb: "mode",
                                              payload: try f.signed("mode", "{}", timestampMs: CommandEnvelope.nowMs() - 10_000), retained: false)
        #expect(reason(verdict) == .stale)
    }

    @Test func replayIsRefusedAlsoAfterARestart() throws {
        let f = try TrustFixture()
        let p = try f.signed("mode", #"{"id":"1","mode":"control"}"#)
        let topic = TrustFixture.topic("mode")
        do {
            let v = try f.verifier()
            #expect(reason(v.verify(topic: topic, verb: "mode", payload: p, retained: false)) == nil)
            #expect(reason(v.verify(topic: topic, verb: "mode", payload: p, retained: false)) == .replayed)
        }
        // A new verifier on the same data directory: the gateway restarted.
        let restarted = try f.verifier()
        #expect(reason(restarted.verify(topic: topic, verb: "mode", payload: p, retained: false)) == .replayed)
        // The same nonce under a new signature (another command) is a replay too.
        let nonce = envelope(p).auth["nonce"] as? String ?? ""
        let sameNonce = try f.signed("mode", #"{"mode":"shadow"}"#, nonce: nonce)
        #expect(reason(restarted.verify(topic: topic, verb: "mode", payload: sameNonce, retained: false)) == .replayed)
        // A fresh one is accepted.
        #expect(reason(restarted.verify(topic: topic, verb: "mode", payload: try f.signed("mode", "{}"), retained: false)) == nil)
    }

    @Test func nonceFileSurvivesATornLastLine() throws {
        let f = try TrustFixture()
        let p = try f.signed("mode", "{}")
        let topic = TrustFixture.topic("mode")
        #expect(reason(try f.verifier().verify(topic: topic, verb: "mode", payload: p, retained: false)) == nil)
        // A crash in mid-append leaves a partial line at the end.
        let file = CommandVerifier.nonceFile(dataDirectory: f.data)
        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("17647".utf8))
        try handle.close()
        let v = try f.verifier()
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: p, retained: false)) == .replayed)
        let second = try f.signed("mode", "{}")
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: second, retained: false)) == nil)
        // Both nonces are read back by the next start (the torn line did not swallow the second).
        let again = try f.verifier()
        #expect(reason(again.verify(topic: topic, verb: "mode", payload: second, retained: false)) == .replayed)
        #expect(reason(again.verify(topic: topic, verb: "mode", payload: p, retained: false)) == .replayed)
    }

    @Test func noncesLeaveTheFileWithTheWindow() throws {
        let f = try TrustFixture()
        let wall = Atomic<Int64>(CommandEnvelope.nowMs())
        let clock = TrustClock(wallMs: { wall.load(ordering: .relaxed) }, monotonicNs: { DispatchTime.now().uptimeNanoseconds })
        var c = CommandVerifier.Configuration()
        c.burst = 1000   // this test is about the window, not the rate limit
        let v = try f.verifier(c, clock: clock)
        let topic = TrustFixture.topic("mode")
        let old = try f.signed("mode", "{}", timestampMs: wall.load(ordering: .relaxed))
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: old, retained: false)) == nil)
        // 40 s later: the old command is stale (not "replayed"), and a restart drops its nonce.
        wall.add(40_000, ordering: .relaxed)
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: old, retained: false)) == .stale)
        for _ in 0..<70 {
            #expect(reason(v.verify(topic: topic, verb: "mode", payload: try f.signed("mode", "{}", timestampMs: wall.load(ordering: .relaxed)), retained: false)) == nil)
        }
        wall.add(40_000, ordering: .relaxed)
        _ = try f.verifier(clock: clock)
        let text = try String(contentsOf: CommandVerifier.nonceFile(dataDirectory: f.data), encoding: .utf8)
        #expect(text.isEmpty, "expired nonces kept: \(text.split(separator: "\n").count) lines")
    }

    @Test func retainedIsRefusedEvenWhenValidlySignedAndInLabMode() throws {
        let f = try TrustFixture()
        let p = try f.signed("mode", #"{"mode":"control"}"#)
        let verdict = try f.verifier().verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: p, retained: true)
        #expect(reason(verdict) == .retained)
        var lab = CommandVerifier.Configuration()
        lab.auth = .none
        #expect(reason(try f.verifier(lab).verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: Array(#"{"mode":"control"}"#.utf8), retained: true)) == .retained)
        // The refused retained command did not burn its nonce: sent fresh, it is obeyed.
        #expect(reason(try f.verifier().verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: p, retained: false)) == nil)
    }

    @Test func withoutTrustedKeysCommandsAreRefusedWithHowToAddOne() throws {
        let dir = try TempDir()
        let v = try CommandVerifier(gatewayID: "gw1", dataDirectory: dir.url, trust: try TrustStore.load(dataDirectory: dir.url))
        let verdict = v.verify(topic: "edgeq/gw1/cmd/mode", verb: "mode", payload: Array(#"{"mode":"control"}"#.utf8), retained: false)
        guard case .refused(let r) = verdict else { Issue.record("accepted"); return }
        #expect(r.reason == .noTrustedKeys)
        #expect(r.message.contains("edgeq keys generate"))
        #expect(r.message.contains("\(dir.url.path)/keys/operator"))
    }

    @Test func authNoneAcceptsUnsignedAsKeyNone() throws {
        let dir = try TempDir()
        var lab = CommandVerifier.Configuration()
        lab.auth = .none
        let v = try CommandVerifier(gatewayID: "gw1", dataDirectory: dir.url, trust: TrustStore(keys: []), configuration: lab)
        let body = Array(#"{"id":"7","mode":"control"}"#.utf8)
        guard case .accepted(let a) = v.verify(topic: "edgeq/gw1/cmd/mode", verb: "mode", payload: body, retained: false) else {
            Issue.record("refused under auth none")
            return
        }
        #expect(a.key == "none" && a.role == nil && a.command == body && a.timestampMs == nil)
    }

    @Test func rateLimiterRefusesUncheckedBeyondTheBurstAndRefills() throws {
        let f = try TrustFixture()
        let mono = Atomic<UInt64>(1_000_000_000)
        let clock = TrustClock(wallMs: { CommandEnvelope.nowMs() }, monotonicNs: { mono.load(ordering: .relaxed) })
        var c = CommandVerifier.Configuration()
        c.burst = 5
        c.checksPerSecond = 2
        let v = try f.verifier(c, clock: clock)
        let topic = TrustFixture.topic("mode")
        let eve = try f.untrustedKey("eve")
        func forged() throws -> [UInt8] {
            try CommandEnvelope.sign(command: "{}", topic: topic, gatewayID: TrustFixture.gatewayID, keyName: "alice", privateKey: eve)
        }
        var reasons: [RefusalReason?] = []
        for _ in 0..<20 { reasons.append(reason(v.verify(topic: topic, verb: "mode", payload: try forged(), retained: false))) }
        #expect(reasons.prefix(5).allSatisfy { $0 == .badSignature })
        #expect(reasons.dropFirst(5).allSatisfy { $0 == .rateLimited })
        // During the flood a good command is refused too (checked by nobody) ...
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: try f.signed("mode", "{}"), retained: false)) == .rateLimited)
        // ... and half a second later (one token at 2/s) it goes through.
        mono.add(500_000_000, ordering: .relaxed)
        #expect(reason(v.verify(topic: topic, verb: "mode", payload: try f.signed("mode", "{}"), retained: false)) == nil)
        #expect(v.refusedCounts[.rateLimited] == 16)
        #expect(v.refusedCounts[.badSignature] == 5)
    }

    @Test func nonASCIICommandsVerify() throws {
        let f = try TrustFixture()
        let cmd = #"{"id":"prüfung ✓ 😀 \"q\" \\","mode":"shadow"}"#
        let verdict = try f.verifier().verify(topic: TrustFixture.topic("mode"), verb: "mode", payload: try f.signed("mode", cmd), retained: false)
        guard case .accepted(let a) = verdict else { Issue.record("\(verdict)"); return }
        #expect(String(decoding: a.command, as: UTF8.self) == cmd)
    }
}
