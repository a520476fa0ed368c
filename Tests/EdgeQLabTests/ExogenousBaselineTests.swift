import EdgeQLab
import EdgeQLog
import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// The switchback trial's exogenous baseline (ExogenousBaseline.swift), fitted on real SQLite
/// logs: the incumbents' shadow logs of the lab's heater and thermal plants (the lab runs the
/// gateway's decision core and log writer), and logs written with the log writer where the
/// reward does or does not depend on the exogenous signals.
@Suite struct ExogenousBaselineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func map(_ name: String) throws -> TopicMap {
        try TopicMap.load(path: root.appendingPathComponent("topics/\(name).yaml").path)
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-baseline-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// The incumbent's shadow log of a lab plant, read back.
    static func shadowLog(_ name: String, steps: Int, seed: UInt64, dir: URL) throws -> (TopicMap, [LoggedTransition]) {
        let map = try map(name)
        let path = dir.appendingPathComponent("\(name)-\(seed).sqlite").path
        switch name {
        case "heater":
            var p = HeaterLabPlant(seed: seed)
            _ = try Lab(map: map).run(&p, steps: steps, policy: .incumbent(dither: 0), seed: seed, logPath: path)
        default:
            var p = ThermalLabPlant(seed: seed)
            _ = try Lab(map: map).run(&p, steps: steps, policy: .incumbent(dither: 0), seed: seed, logPath: path)
        }
        return (map, try ExperienceLog.open(path: path, create: false).transitions(window: .all))
    }

    /// Feeds `rows` to a live evaluator as the gateway would (each row's end values, in order)
    /// and returns the per-tick R² of its predictions of the rows' rewards.
    static func evaluatorR2(_ model: ExogenousBaseline.Model, map: TopicMap, rows: [LoggedTransition]) throws -> Double {
        var e = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
        var pairs: [(Double, Double)] = []
        for r in rows {
            let next = try #require(r.transition.nextSignals)
            #expect(r.signalNames == map.loggedSignalNames)
            let p = e.advance(next)
            if r.transition.actor == .incumbent { pairs.append((r.transition.reward, p)) }
        }
        let mean = pairs.map(\.0).reduce(0, +) / Double(pairs.count)
        let sse = pairs.map { ($0.0 - $0.1) * ($0.0 - $0.1) }.reduce(0, +)
        let sst = pairs.map { ($0.0 - mean) * ($0.0 - mean) }.reduce(0, +)
        return 1 - sse / sst
    }

    /// On the incumbents' shadow logs of the heater (setpoint steps, ambient wander: 6 shifts)
    /// and the thermal zone (weather, prices, occupancy, the clock: 4 weeks, for 8 placebo pairs of its 36-hour blocks), the baseline explains
    /// most of the spread of placebo pair differences on held-out stretches and is accepted; the
    /// live evaluator, fed the log's values tick by tick, predicts the rewards as well as the
    /// held-out check found (it computes the same features); the stored JSON reads back the same.
    @Test(arguments: [("heater", 6 * 960), ("thermal", 4 * 2016)])
    func acceptedOnLabShadowLogsWhereTheWeatherDrivesTheReward(plant: String, steps: Int) throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (map, rows) = try Self.shadowLog(plant, steps: steps, seed: 11, dir: dir)
        let b = ExogenousBaseline.fit(map: map, rows: rows, reference: .incumbent)
        let r = b.report
        #expect(r.accepted, "\(r)")
        #expect(r.reason == nil && r.rows == "incumbent" && r.signals == map.modelSignalNames.exogenous, "\(r)")
        #expect(r.placeboPairs >= 8, "\(r)")
        let ratio = try #require(r.heldOutVarianceRatio)
        #expect(ratio <= 0.5, "held-out placebo variance ratio \(ratio) (\(plant))")
        #expect(try #require(r.adjustedRMS) < (try #require(r.rawRMS)))
        let model = try #require(b.usable)
        let back = try JSONDecoder().decode(ExogenousBaseline.self, from: b.json())
        #expect(back == b)
        let r2 = try Self.evaluatorR2(model, map: map, rows: rows)
        #expect(r2 >= (try #require(r.heldOutTickR2)) - 0.05, "live evaluator R² \(r2), held-out \(r.heldOutTickR2 ?? .nan)")
    }

    static let mapping = """
        gateway: {id: b}
        signals:
          - {name: temp, topic: p/s, json: temp, role: controlled}
          - {name: out, topic: p/s, json: out, role: exogenous}
          - {name: price, topic: p/s, json: price, role: exogenous}
        state:
          features:
            - {signal: temp}
        tick: {trigger: p/s}
        reward: -abs(temp)
        actions:
          list:
            - {name: off, publish: {topic: p/cmd, payload: "0"}}
            - {name: on, publish: {topic: p/cmd, payload: "1"}}
        learning:
          promotion: {policy: trial, trial: {block: 40, burn_in: 8ADJUST}}
        """

    /// Writes `n` incumbent rows with the log writer: `out` a slow random walk, `price` a step
    /// schedule, the reward from `reward(out, price, noise)`.
    static func writeLog(path: String, n: Int, seed: UInt64, servedEvery: Int? = nil, reward: (Double, Double, Double) -> Double) throws {
        let log = try ExperienceLog.open(path: path, gatewayID: "b")
        var options = TransitionWriter.Options()
        options.signalNames = ["temp", "out", "price"]
        let writer = try log.makeWriter(options: options)
        var state = seed
        func uniform() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53)
        }
        func gaussian() -> Double { (-2 * log1p(-uniform())).squareRoot() * cos(2 * .pi * uniform()) }
        var out = 10.0, price = 1.0
        for i in 0..<n {
            let before = [20.0, out, price]
            out += 0.3 * gaussian()
            if i % 57 == 0 { price = [0.5, 1, 2, 4][Int(uniform() * 4) % 4] }
            let after = [20.0, out, price]
            // With `servedEvery` = m: blocks of m ticks alternate between the incumbent and a served v2.
            let served = servedEvery.map { (i / $0) % 2 == 1 } ?? false
            writer.submit(Transition(time: Double(i), tick: Int64(i), episode: 0, state: [0], action: i % 2,
                                     actor: served ? .model : .incumbent, reward: reward(out, price, gaussian()), nextState: [0],
                                     mode: served ? .control : .shadow, modelVersion: served ? "2" : nil,
                                     signals: before, nextSignals: after))
        }
        try writer.close()
    }

    /// Logs written with the log writer: where the reward is driven by the exogenous signals
    /// (−out·price plus noise) the baseline is accepted; where it is noise independent of them it
    /// is refused, and the report says it does not help; with too few rows, or `adjust: none`, no
    /// baseline is fitted and the report says why.
    @Test func acceptedWhereExogenousSignalsDriveTheRewardRefusedWhereTheyDoNot() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let map = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ""), file: "b.yaml")
        let driven = dir.appendingPathComponent("driven.sqlite").path
        try Self.writeLog(path: driven, n: 4000, seed: 3) { out, price, noise in -0.05 * out * price + 0.2 * noise }
        let drivenRows = try ExperienceLog.open(path: driven, create: false).transitions(window: .all)
        let yes = ExogenousBaseline.fit(map: map, rows: drivenRows, reference: .incumbent)
        #expect(yes.report.accepted && (yes.report.heldOutVarianceRatio ?? 1) < 0.2, "\(yes.report)")

        let independent = dir.appendingPathComponent("independent.sqlite").path
        try Self.writeLog(path: independent, n: 4000, seed: 3) { _, _, noise in -1 + 0.2 * noise }
        let no = ExogenousBaseline.fit(map: map, rows: try ExperienceLog.open(path: independent, create: false).transitions(window: .all),
                                       reference: .incumbent)
        #expect(!no.report.accepted && no.usable == nil && !no.report.needsLongerLog, "\(no.report)")
        #expect((no.report.heldOutVarianceRatio ?? 0) > 0.8, "\(no.report)")
        #expect(no.report.reason?.contains("does not help enough on held-out data") == true, "\(no.report)")

        let few = ExogenousBaseline.fit(map: map, rows: Array(drivenRows.prefix(500)), reference: .incumbent)
        #expect(!few.report.accepted && few.model == nil)
        #expect(few.report.reason?.contains("too few rows: 500 rows with the exogenous signals and a reward make 6 placebo pairs") == true, "\(few.report)")
        // Only log was missing: a field of the report, stored in the JSON and read back.
        #expect(few.report.needsLongerLog, "\(few.report)")
        #expect(String(decoding: few.json(), as: UTF8.self).contains("\"needs_longer_log\":true"))
        #expect(try JSONDecoder().decode(ExogenousBaseline.self, from: few.json()) == few)
        #expect(!yes.report.needsLongerLog)

        let off = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ", adjust: none"), file: "b.yaml")
        let none = ExogenousBaseline.fit(map: off, rows: drivenRows, reference: .incumbent)
        #expect(!none.report.accepted && none.report.reason?.contains("adjust: none") == true && !none.report.needsLongerLog, "\(none.report)")

        // Rows of another controller: a served model's baseline falls back to every row, and says so.
        let other = ExogenousBaseline.fit(map: map, rows: drivenRows, reference: .model("7"))
        #expect(other.report.rows == "all" && other.report.accepted, "\(other.report)")

        // The reference's rows come in stretches of 60 ticks between a served model's: no stretch
        // holds a placebo pair of two 40-tick blocks, so every row is used (pairs span both
        // controllers); with stretches of 400 ticks, the reference's own.
        let alternating = dir.appendingPathComponent("alternating.sqlite").path
        try Self.writeLog(path: alternating, n: 4000, seed: 5, servedEvery: 60) { out, price, noise in -0.05 * out * price + 0.2 * noise }
        let short = ExogenousBaseline.fit(map: map, rows: try ExperienceLog.open(path: alternating, create: false).transitions(window: .all),
                                          reference: .incumbent)
        #expect(short.report.rows == "all" && short.report.placeboPairs == 50, "\(short.report)")
        let long = dir.appendingPathComponent("long.sqlite").path
        try Self.writeLog(path: long, n: 4000, seed: 5, servedEvery: 400) { out, price, noise in -0.05 * out * price + 0.2 * noise }
        let longRows = try ExperienceLog.open(path: long, create: false).transitions(window: .all)
        let own = ExogenousBaseline.fit(map: map, rows: longRows, reference: .incumbent)
        #expect(own.report.rows == "incumbent" && own.report.placeboPairs == 25 && own.report.fittedRows == 2000 && own.report.accepted, "\(own.report)")
        let served = ExogenousBaseline.fit(map: map, rows: longRows, reference: .model("2"))
        #expect(served.report.rows == "v2" && served.report.placeboPairs == 25 && served.report.accepted, "\(served.report)")
    }

    /// Why the gateway warms a trial's baseline on its log: on the lab thermal zone's shadow log
    /// (10 weeks; the baseline fitted on the first 5, trials starting every 12 hours in the
    /// last 5), a baseline started at rest at the trial's first tick sums its first block's
    /// scored ticks far from one fed every row before — by more than half of what the held-out
    /// adjusted placebo pair differences spread (measured: 2.8 against 3.8) —, while one replayed
    /// over the rows the gateway reads (five of its longest time constant and two blocks) agrees
    /// with it to a twentieth of that.
    @Test func aBaselineStartedAtRestMissesTheFirstBlockAReplayedOneDoesNot() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (map, rows) = try Self.shadowLog("thermal", steps: 10 * 2016, seed: 21, dir: dir)
        let fitted = ExogenousBaseline.fit(map: map, rows: Array(rows.prefix(rows.count / 2)), reference: .incumbent)
        let model = try #require(fitted.usable, "\(fitted.report)")
        let adjustedRMS = try #require(fitted.report.adjustedRMS)
        guard case .ticks(let block) = map.learning.trial.block else { Issue.record("thermal has tick blocks"); return }
        let burnIn = map.learning.trial.burnIn
        var fed = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
        let predictions = try rows.map { fed.advance(try #require($0.transition.nextSignals)) }
        let read = fed.warmUpRows + 2 * (block - burnIn)
        var atRest: [Double] = [], replayed: [Double] = []
        var start = rows.count / 2
        while start + block <= rows.count {
            var rest = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            var warm = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            _ = warm.replay(Array(rows[(start - read)..<start]), reference: nil, ticks: 0, warmUp: 0, minimumTicks: 0)
            var (sumRest, sumWarm, sumFed) = (0.0, 0.0, 0.0)
            for j in start..<(start + block) {
                let next = try #require(rows[j].transition.nextSignals)
                let (r, w) = (rest.advance(next), warm.advance(next))
                if j - start >= burnIn { sumRest += r; sumWarm += w; sumFed += predictions[j] }
            }
            atRest.append(sumRest - sumFed)
            replayed.append(sumWarm - sumFed)
            start += block / 3
        }
        func rms(_ x: [Double]) -> Double { (x.map { $0 * $0 }.reduce(0, +) / Double(x.count)).squareRoot() }
        #expect(atRest.count >= 60)
        #expect(rms(atRest) > 0.5 * adjustedRMS, "at rest off by \(rms(atRest)) (rms), the adjusted pairs spread by \(adjustedRMS)")
        #expect(rms(replayed) < 0.05 * rms(atRest), "replayed off by \(rms(replayed)), at rest by \(rms(atRest))")
    }

    /// `BaselineEvaluator.replay`, which the gateway runs over the end of its log when a trial or
    /// guard starts: the evaluator goes on from the log's end exactly as one fed every row in
    /// order (as the decision thread feeds it), not as one at rest; and over the last `ticks` rows
    /// of the controller in charge only, the stop-loss's yardstick before an adjusted trial —
    /// its raw rate is those rows' mean reward, its rate less the baseline what the evaluator
    /// predicts for them — near 0 where the exogenous signals drive the reward, its tick spread
    /// down to the noise's; too few of the controller's rows, or no reference, give none.
    @Test func replayingTheLogWarmsTheBaselineAndGivesTheControllersRateLessIt() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let map = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ""), file: "b.yaml")
        let path = dir.appendingPathComponent("served.sqlite").path
        // Blocks of 400 ticks alternate, the incumbent first: the last 400 rows are v2's.
        try Self.writeLog(path: path, n: 4000, seed: 9, servedEvery: 400) { out, price, noise in -0.05 * out * price + 0.2 * noise }
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
        for (reference, version) in [(ExogenousBaseline.Reference.model("2"), "2"), (.incumbent, nil)] {
            let model = try #require(ExogenousBaseline.fit(map: map, rows: rows, reference: reference).usable)
            let tail = Array(rows.suffix(1_200))
            var replayed = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            #expect(replayed.warmUpRows == Int((5 * (model.timeConstants.max() ?? 0)).rounded(.up)) && replayed.warmUpRows > 0)
            let replay = replayed.replay(Array(tail.prefix(1_100)), reference: reference, ticks: 300, warmUp: 100, minimumTicks: 150)
            let r = try #require(replay)
            // By hand: the evaluator over the same rows, the reference's last 300 after the first 100.
            var e = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            var mine: [(Double, Double)] = []
            for (j, row) in tail.prefix(1_100).enumerated() {
                let b = e.advance(try #require(row.transition.nextSignals))
                let isMine = version.map { row.transition.modelVersion == $0 } ?? (row.transition.actor == .incumbent)
                if j >= 100 && isMine { mine.append((row.transition.reward, b)) }
            }
            let last = mine.suffix(300)
            #expect(r.ticks == 300 && last.count == 300)
            let raw = last.map(\.0).reduce(0, +) / 300, adjusted = last.map { $0.0 - $0.1 }.reduce(0, +) / 300
            #expect(abs(r.rate - raw) < 1e-9 && abs(r.adjustedRate - adjusted) < 1e-9, "\(r) against \(raw), \(adjusted)")
            // Raw −0.15 … +0.27 a tick by the weather of the stretch; less the baseline about 0,
            // its tick spread down to the noise's 0.2.
            #expect(abs(r.rate) > 0.1 && abs(r.adjustedRate) < 0.05, "\(r)")
            #expect(r.adjustedTickSD < r.tickSD && r.adjustedTickSD > 0.17 && r.adjustedTickSD < 0.23, "\(r)")
            // Going on from the log's end: the replayed evaluator predicts the next rows as the one
            // fed every row does; one started at rest there does not.
            var rest = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            var restGap = 0.0
            for row in tail.suffix(100) {
                let next = try #require(row.transition.nextSignals)
                let (a, b, c) = (replayed.advance(next), e.advance(next), rest.advance(next))
                #expect(a == b, "replayed \(a), fed row by row \(b)")
                restGap = max(restGap, abs(c - b))
            }
            #expect(restGap > 1e-3, "an evaluator at rest predicts as a warmed one: \(restGap)")
        }
        // The incumbent's last 400 rows are 400 ticks before the end: 600 rows hold 200 of them.
        let model = try #require(ExogenousBaseline.fit(map: map, rows: rows, reference: .incumbent).usable)
        func rate(_ rows: [LoggedTransition], _ reference: ExogenousBaseline.Reference?, minimum: Int) throws -> RecentResidualRate? {
            var e = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            return e.replay(rows, reference: reference, ticks: 300, warmUp: 0, minimumTicks: minimum)
        }
        #expect(try rate(Array(rows.suffix(600)), .incumbent, minimum: 250) == nil)
        #expect(try rate(Array(rows.suffix(600)), .incumbent, minimum: 150)?.ticks == 200)
        #expect(try rate(Array(rows.suffix(600)), nil, minimum: 2) == nil)
        // Without a baseline (an unadjusted trial): the raw rate of the same rows, twice.
        let plain = try #require(RecentResidualRate.of(Array(rows.suffix(600)), baseline: nil, reference: .incumbent, ticks: 300, minimumTicks: 150))
        let incumbentRows = rows.suffix(600).filter { $0.transition.actor == .incumbent }.map(\.transition.reward)
        #expect(plain.ticks == 200 && abs(plain.rate - incumbentRows.reduce(0, +) / 200) < 1e-9, "\(plain)")
        #expect(plain.adjustedRate == plain.rate && plain.adjustedTickSD == plain.tickSD)
    }

    /// A `baseline.json` written before `needs_longer_log` was stored (the literal text of such a
    /// file) still loads: refused for too few rows it needs a longer log, refused for any other
    /// reason or accepted it does not; a file that has the field is read by the field.
    @Test func anOldBaselineFileWithoutTheFieldIsReadByItsReason() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func load(_ text: String) throws -> ExogenousBaseline {
            let url = dir.appendingPathComponent("baseline-\(UUID().uuidString).json")
            try Data(text.utf8).write(to: url)
            return try #require(ExogenousBaseline.load(from: url), "does not load: \(text)")
        }
        let short = #"{"report":{"accepted":false,"features":0,"fitted_rows":0,"max_ratio":0.8,"placebo_pairs":0,"reason":"too few rows: 300 rows with the exogenous signals and a reward make 2 placebo pairs (stretches of 120 consecutive ticks, two 60-tick blocks); 8 are needed to check that the baseline helps","rows":"all","signals":["y"],"time_constants":[1.875,7.5]}}"#
        let old = try load(short)
        #expect(old.report.needsLongerLog && !old.report.accepted && old.model == nil && old.report.signals == ["y"], "\(old.report)")
        let unhelpful = #"{"report":{"accepted":false,"features":0,"fitted_rows":0,"max_ratio":0.8,"placebo_pairs":0,"reason":"the regression is singular on the reference's rows","rows":"incumbent","signals":["y"],"time_constants":[1.875,7.5]}}"#
        #expect(try !load(unhelpful).report.needsLongerLog)
        let off = #"{"report":{"accepted":false,"features":0,"fitted_rows":0,"max_ratio":0.8,"placebo_pairs":0,"reason":"the mapping turns the adjustment off (learning.promotion.trial.adjust: none)","rows":"none","signals":[],"time_constants":[]}}"#
        #expect(try !load(off).report.needsLongerLog)
        // The field, where present, is what counts.
        let stated = short.replacingOccurrences(of: #""max_ratio""#, with: #""needs_longer_log":false,"max_ratio""#)
        #expect(try !load(stated).report.needsLongerLog)
        // An old accepted baseline (fitted on the driven log, its new key taken out) reads the same.
        let path = dir.appendingPathComponent("driven.sqlite").path
        try Self.writeLog(path: path, n: 2000, seed: 3) { out, price, noise in -0.05 * out * price + 0.2 * noise }
        let map = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ""), file: "b.yaml")
        let fitted = ExogenousBaseline.fit(map: map, rows: try ExperienceLog.open(path: path, create: false).transitions(window: .all), reference: .incumbent)
        #expect(fitted.report.accepted, "\(fitted.report)")
        let text = String(decoding: fitted.json(), as: UTF8.self)
        #expect(text.contains(#""needs_longer_log":false,"#))
        let accepted = try load(text.replacingOccurrences(of: #""needs_longer_log":false,"#, with: ""))
        #expect(accepted == fitted)
    }

    /// Episode blocks, a mapping without exogenous signals and `adjust: none` get no baseline, with
    /// the reason, whatever the log holds (`ruledOut(by:)`).
    @Test func episodeBlocksAndNoExogenousSignalsGetNoBaseline() throws {
        let episodic = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "{block: 40, burn_in: 8ADJUST}", with: "{block: episode}")
            .replacingOccurrences(of: "reward: -abs(temp)", with: "reward: -abs(temp)\nterminal: temp > 100"), file: "b.yaml")
        let e = ExogenousBaseline.fit(map: episodic, rows: [], reference: .incumbent)
        #expect(e.model == nil && e.report.reason?.contains("blocks are episodes") == true, "\(e.report)")
        let plain = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: "")
            .replacingOccurrences(of: ", role: exogenous", with: ""), file: "b.yaml")
        let p = ExogenousBaseline.fit(map: plain, rows: [], reference: .incumbent)
        #expect(p.model == nil && p.report.reason?.contains("no signal 'role: exogenous'") == true, "\(p.report)")
        // What the mapping alone rules out is known without a log (the gateway does not read its
        // log for a fleet model's baseline then); a mapping that allows a baseline leaves it to the log.
        let off = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ", adjust: none"), file: "b.yaml")
        #expect(ExogenousBaseline.ruledOut(by: episodic) == e && ExogenousBaseline.ruledOut(by: plain) == p)
        #expect(ExogenousBaseline.ruledOut(by: off) == ExogenousBaseline.fit(map: off, rows: [], reference: .incumbent))
        let allowed = try TopicMap.parse(yaml: Self.mapping.replacingOccurrences(of: "ADJUST", with: ""), file: "b.yaml")
        #expect(ExogenousBaseline.ruledOut(by: allowed) == nil)
    }
}
