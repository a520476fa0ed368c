import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq check`, run as the real command on real files.
@Suite struct CheckCommandTests {
    static var root: URL { PackageRoot.url }
    static let topicFiles = PackageRoot.topicFiles

    @Test func everyFileInTopicsPasses() throws {
        #expect(Self.topicFiles.count >= 5)
        for f in Self.topicFiles {
            let r = try EdgeQBinary.run(["check", f])
            #expect(r.code == 0, "edgeq check \(f):\n\(r.stderr)")
            #expect(r.stdout.contains("\(f): ok"))
            for part in ["signals", "state      width", "actions", "subscribes", "publishes"] {
                #expect(r.stdout.contains(part), "summary of \(f) lacks \(part):\n\(r.stdout)")
            }
        }
    }

    @Test func thermalSummaryShowsWidthsAndTopics() throws {
        let f = Self.root.appendingPathComponent("topics/thermal.yaml").path
        let r = try EdgeQBinary.run(["check", f])
        #expect(r.code == 0)
        #expect(r.stdout.contains("state      width 12 = 12 columns × 1 tick"))
        #expect(r.stdout.contains("subscribes plant/thermal/state, plant/thermal/cmd"))
        #expect(r.stdout.contains("publishes  plant/thermal/cmd"))
        #expect(r.stdout.contains("handover   take → plant/thermal/mode; give → plant/thermal/mode; Last Will on plant/thermal/mode (keep-alive 5 s)"), "\(r.stdout)")
    }

    /// Signal roles and the plant model's reward (the `model` line), or why candidates cannot be
    /// judged on a plant model.
    @Test func summaryShowsRolesAndTheModelsReward() throws {
        let heater = try EdgeQBinary.run(["check", Self.root.appendingPathComponent("topics/heater.yaml").path])
        #expect(heater.code == 0)
        #expect(heater.stdout.contains("  temp ← plant/heater/state temp [0, 300] role controlled"), "\(heater.stdout)")
        #expect(heater.stdout.contains("  power_pct ← plant/heater/state power_pct [0, 100] role applied [0, 25, 50, 75, 100]"), "\(heater.stdout)")
        #expect(heater.stdout.contains("model      reward -0.1 * (abs(temp - setpoint) + power_pct / 100)\n"), "\(heater.stdout)")
        let cartpole = try EdgeQBinary.run(["check", Self.root.appendingPathComponent("topics/cartpole.yaml").path])
        #expect(cartpole.stdout.contains("model      reward 1; terminal abs(x) > 2.4 or abs(theta) > 0.20943951023931953"), "\(cartpole.stdout)")
        let reference = try EdgeQBinary.run(["check", Self.root.appendingPathComponent("topics/reference.yaml").path])
        #expect(reference.code == 0)
        #expect(reference.stdout.contains("model      candidates cannot be judged on a plant model: the reward reads signal 'setpoint', which has no role"), "\(reference.stdout)")
    }

    /// `learning.rollouts` is summarized when it is on, and said not to run where no plant model
    /// can be used.
    /// The summary says how the mapping explores in control, and warns what a high ε costs.
    @Test func summaryShowsTheExplorationInControl() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (replacement, expected, costs) in [
            ("  exploration: {start: 1.0, end: 0.04, decay_steps: 8000, budget: 1.0}",
             "explore    ε 1 → 0.04 over 8000 control decisions of a model, at most 100 % of them explorative; never in the incumbent's blocks", true),
            ("  exploration: {start: 0.1, end: 0.02, decay_steps: 500, budget: 0.05}",
             "explore    ε 0.1 → 0.02 over 500 control decisions of a model, at most 5 % of them explorative; never in the incumbent's blocks\n", false),
            ("  exploration: {start: 0.1, end: 0.02, decay_steps: 500, budget: 0}", "explore    none in control\n", false),
        ] {
            var text = try String(contentsOf: Self.root.appendingPathComponent("topics/cartpole.yaml"), encoding: .utf8)
            // The shipped mapping's exploration line, whatever it says, replaced.
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("  exploration: {") })
            text = text.replacingOccurrences(of: String(line), with: replacement)
            let file = dir.appendingPathComponent("cartpole.yaml")
            try text.write(to: file, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["check", file.path])
            #expect(r.code == 0, "\(r.stderr)")
            #expect(r.stdout.contains(expected), "\(r.stdout)")
            #expect(r.stdout.contains("acts at random on most ticks, in its trial as when served") == costs, "\(r.stdout)")
            // The shipped mapping promotes through the trial, which judges a model as it serves.
            #expect(r.stdout.contains("a trial against the incumbent, which judges the model as it would serve, is unlikely to promote") == costs, "\(r.stdout)")
        }
    }

    @Test func summaryShowsTheModelRollouts() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, section, expected) in [
            ("cartpole", "  rollouts: {enabled: true}\n",
             "rollouts   300 × up to 50 steps on the plant model per retraining, ε 0.2, uncertainty penalty 1\n"),
            ("cartpole", "  rollouts: {enabled: true, starts: 10, horizon: 7, epsilon: 0, uncertainty_penalty: 0.5, max_uncertainty: 0.1}\n",
             "rollouts   10 × up to 7 steps on the plant model per retraining, ε 0, uncertainty penalty 0.5, uncertainty at most 0.1\n"),
            ("reference", "", ": none will run (no plant model can be used, see the model line)\n"),
        ] {
            var text = try String(contentsOf: Self.root.appendingPathComponent("topics/\(name).yaml"), encoding: .utf8)
            text = text.replacingOccurrences(of: "\nlearning:\n", with: "\nlearning:\n" + section)
            if name == "reference" {   // it has the section, off
                let off = "    enabled: false                   # short runs on the plant model"
                #expect(text.contains(off))
                text = text.replacingOccurrences(of: off, with: "    enabled: true                    # short runs on the plant model")
            }
            let file = dir.appendingPathComponent("\(name).yaml")
            try text.write(to: file, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["check", file.path])
            #expect(r.code == 0, "\(r.stderr)")
            #expect(r.stdout.contains(expected), "\(r.stdout)")
        }
        let off = try EdgeQBinary.run(["check", Self.root.appendingPathComponent("topics/cartpole.yaml").path])
        #expect(!off.stdout.contains("rollouts   "), "\(off.stdout)")
    }

    /// The switchback trial's settings are summarized when the policy is `trial`.
    @Test func referenceSummaryShowsTheTrial() throws {
        let f = Self.root.appendingPathComponent("topics/reference.yaml").path
        let r = try EdgeQBinary.run(["check", f])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("promotion trial"), "\(r.stdout)")
        #expect(r.stdout.contains("trial      blocks of 96 ticks (burn-in 8), better with confidence 0.95 (0.5 of 1 − confidence at the last look), 4…30 pairs, futile when not 1 % better, no tick budget; adjusted for the exogenous baseline when one is accepted; control share 0.1 over 20 pairs"),
                "\(r.stdout)")
        // How soon the guard can judge a served model: a pair every 10 blocks of 96 ticks.
        #expect(r.stdout.contains("guard      a compared pair every 10 blocks after a promotion; its first look at most 40 blocks, 3840 ticks after it (4 pairs), 20 blocks, 1920 ticks (2 pairs) when it borrows the promoting trial's noise"),
                "\(r.stdout)")
    }

    /// The guard line with a probation, with episodes, and off (the reference mapping with its
    /// promotion settings changed).
    @Test func theGuardLineSaysHowSoonItCanJudge() throws {
        let reference = try String(contentsOf: Self.root.appendingPathComponent("topics/reference.yaml"), encoding: .utf8)
        let dir = try TempDir()
        func guardLine(_ replacements: [(String, String)]) throws -> String {
            var text = reference
            for (a, b) in replacements {
                #expect(text.contains(a), "topics/reference.yaml has no '\(a)'")
                text = text.replacingOccurrences(of: a, with: b)
            }
            let file = dir.url.appendingPathComponent("m.yaml").path
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["check", file])
            #expect(r.code == 0, "\(r.stderr)")
            return r.stdout.split(separator: "\n").first { $0.hasPrefix("guard ") }.map(String.init) ?? ""
        }
        #expect(try guardLine([("block: 96 ", "block: 432 "), ("probation_pairs: 0 ", "probation_pairs: 6 ")])
                == "guard      a compared pair every 10 blocks after a promotion (every 2 for the first 6: probation); its first look at most 8 blocks, 3456 ticks after it (4 pairs), 4 blocks, 1728 ticks (2 pairs) when it borrows the promoting trial's noise")
        #expect(try guardLine([("control_share: 0.1 ", "control_share: 0 ")]).hasPrefix("guard      off (control_share 0)"))
    }

    /// The novelty line names the exogenous signals the guard watches (the reference mapping's
    /// outdoor_temp), says when it is off, and when there is nothing to watch.
    @Test func theNoveltyLineNamesTheExogenousSignalsItWatches() throws {
        let reference = try String(contentsOf: Self.root.appendingPathComponent("topics/reference.yaml"), encoding: .utf8)
        let dir = try TempDir()
        func noveltyLine(_ a: String, _ b: String) throws -> String {
            #expect(reference.contains(a), "topics/reference.yaml has no '\(a)'")
            let file = dir.url.appendingPathComponent("m.yaml").path
            try reference.replacingOccurrences(of: a, with: b).write(toFile: file, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["check", file])
            #expect(r.code == 0, "\(r.stderr)")
            return r.stdout.split(separator: "\n").first { $0.hasPrefix("novelty ") }.map(String.init) ?? ""
        }
        let on = try noveltyLine("novelty_pairs: 4 ", "novelty_pairs: 4 ")
        #expect(on.hasPrefix("novelty    4 pairs of probation when ") && on.contains("outdoor_temp"), "\(on)")
        #expect(try noveltyLine("novelty_pairs: 4 ", "novelty_pairs: 0 ").hasPrefix("novelty    off (novelty_pairs 0)"))
        #expect(try noveltyLine("role: exogenous ", "role: controlled ").hasPrefix("novelty    nothing to watch"))
    }

    @Test func invalidFileExits65WithEveryErrorAtItsPlace() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yaml").path
        try """
        gateway:
          id: t
          brokrs: [mqtt://x:1]
        signals:
          - {name: a, topic: p/a, range: [5, 1]}
        state:
          features:
            - {name: e, expr: a + c * 2}
        tick: {trigger: p/a}
        reward: a
        actions:
          list: []

        """.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["check", file])
        #expect(r.code == 65)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.contains("\(file):3:3: unknown key 'brokrs' in gateway; did you mean 'brokers'?"), "\(r.stderr)")
        #expect(lines.contains("\(file):5:34: range [5, 1] is empty: min must be less than max"), "\(r.stderr)")
        #expect(lines.contains { $0.hasPrefix("\(file):8:27: in feature 'e': unknown signal or feature 'c'") }, "\(r.stderr)")
        #expect(lines.contains("\(file):12:9: actions list is empty: give at least one action"), "\(r.stderr)")
    }

    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A mapping whose first model relies on a dithered incumbent (no conservative term) is
    /// valid (exit 0) but warned about; the shipped cart-pole recipe no longer relies on it.
    @Test func aMappingThatReliesOnDitherIsWarnedAbout() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("nocql.yaml").path
        try processMapping(id: "p1", plant: "p1", learning: "  cql_weight: 0").write(toFile: file, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["check", file])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\(file): ok"))
        #expect(r.stderr.contains("\(file): warning: learning.cql_weight is 0"), "\(r.stderr)")
        #expect(r.stderr.contains("dither"))
        let conservative = dir.appendingPathComponent("cql.yaml").path
        try processMapping(id: "p1", plant: "p1", learning: "  cql_weight: 0.1").write(toFile: conservative, atomically: true, encoding: .utf8)
        let c = try EdgeQBinary.run(["check", conservative])
        #expect(c.code == 0 && !c.stderr.contains("warning"), "\(c.stderr)")
        let cartpole = Self.root.appendingPathComponent("topics/cartpole.yaml").path
        let shipped = try EdgeQBinary.run(["check", cartpole])
        #expect(shipped.code == 0 && !shipped.stderr.contains("warning"), "\(shipped.stderr)")
    }

    /// `--log` measures the incumbent's rows of a real log: a rule that is deterministic in the
    /// state (action = sign of x) is warned about when nothing in the mapping will show another
    /// action (only a note when its conservative term and exploration in control cope, or when
    /// candidates reach control through a switchback trial, whose blocks show their own choices); the
    /// same states with the action varying (every third command flipped) are not; a log with
    /// no incumbent row is not judged.
    @Test func checkLogMeasuresTheIncumbentsActionDiversity() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("p1.yaml").path
        // Served without a trial (`auto`): nothing but exploration would show another action.
        try processMapping(id: "p1", plant: "p1", learning: "  cql_weight: 0.1\n  promotion: {policy: auto}").write(toFile: file, atomically: true, encoding: .utf8)
        func write(_ name: String, rows: Int, action: (Int, Float) -> Int, actor: Actor = .incumbent) throws -> String {
            let data = dir.appendingPathComponent(name).path
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let log = try ExperienceLog.open(dataDirectory: data, gatewayID: "p1")
            let writer = try log.makeWriter()
            for k in 0..<rows {
                let x = Float(sin(Double(k) * 0.7)), nx = Float(sin(Double(k + 1) * 0.7))
                _ = writer.submit(Transition(time: 1_800_000_000 + Double(k), tick: Int64(k), episode: 0, state: [x],
                                             action: action(k, x), actor: actor, reward: -Double(abs(x)), nextState: [nx],
                                             mode: actor == .incumbent ? .shadow : .control))
            }
            try writer.flush()
            try writer.close()
            return data
        }
        let deterministic = try write("deterministic", rows: 2000) { _, x in x > 0 ? 1 : 0 }
        let r = try EdgeQBinary.run(["check", file, "--log", deterministic])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("log        2000 rows (last 50,000), 2000 from the incumbent (low 50%, high 50%); single-action states"), "\(r.stdout)")
        #expect(r.stderr.contains("\(file): warning: \(deterministic)/experience.sqlite: the incumbent's commands hardly vary"), "\(r.stderr)")
        #expect(r.stderr.contains("candidates can only copy the incumbent"), "\(r.stderr)")

        /// `edgeq check --log deterministic` with a mapping of `learning`: a note, no warning.
        func expectNote(_ name: String, learning: String) throws -> String {
            let path = dir.appendingPathComponent("\(name).yaml").path
            try processMapping(id: "p1", plant: "p1", learning: learning).write(toFile: path, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["check", path, "--log", deterministic])
            #expect(r.code == 0 && !r.stderr.contains("warning"), "\(r.stderr)")
            #expect(r.stderr.contains("\(path): note: \(deterministic)/experience.sqlite: the incumbent's commands hardly vary"), "\(r.stderr)")
            return r.stderr
        }
        // With the switchback trial (the default) and no exploration: candidates' own departures show other actions.
        let trial = try expectNote("trial", learning: "  cql_weight: 0.1\n  promotion: {policy: trial}")
        #expect(trial.contains("only a candidate's own departures from it"), "\(trial)")
        // With exploration in control.
        _ = try expectNote("exploring", learning: "  cql_weight: 0.1\n  exploration: {start: 1.0, end: 0.05, decay_steps: 1000, budget: 1.0}")
        let plain = dir.appendingPathComponent("plain.yaml").path
        try processMapping(id: "p1", plant: "p1", learning: "  cql_weight: 0").write(toFile: plain, atomically: true, encoding: .utf8)
        let p = try EdgeQBinary.run(["check", plain, "--log", deterministic])
        #expect(p.stderr.contains("\(plain): warning: \(deterministic)/experience.sqlite: the incumbent's commands hardly vary"), "\(p.stderr)")
        #expect(p.stderr.contains("with cql_weight 0 every candidate learned from it fails unsupported_actions"), "\(p.stderr)")

        let varied = try write("varied", rows: 2000) { k, x in (x > 0) != (k % 3 == 0) ? 1 : 0 }
        let v = try EdgeQBinary.run(["check", file, "--log", varied + "/experience.sqlite"])
        #expect(v.code == 0 && v.stdout.contains("2000 from the incumbent"), "\(v.stdout)\n\(v.stderr)")
        #expect(!v.stderr.contains("warning"), "\(v.stderr)")

        let control = try write("control", rows: 500, action: { _, x in x > 0 ? 1 : 0 }, actor: .model)
        let c = try EdgeQBinary.run(["check", file, "--log", control])
        #expect(c.code == 0 && c.stdout.contains("action diversity not applicable"), "\(c.stdout)")
        #expect(!c.stderr.contains("warning"), "\(c.stderr)")

        let missing = try EdgeQBinary.run(["check", file, "--log", dir.appendingPathComponent("nothing").path])
        #expect(missing.code == 66, "\(missing.stderr)")
    }

    /// `--log` warns about a state input that only grew over the log (a meter): it leaves every
    /// model's support once the plant passes the log's last value. A step counter that restarts
    /// each episode, and a swinging input, are not warned about.
    @Test func checkLogWarnsAboutAStateInputThatOnlyGrows() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("meter.yaml").path
        try processMapping(id: "p1", plant: "p1", learning: "  cql_weight: 0.1")
            .replacingOccurrences(of: "    - {signal: x, normalize: [-10, 10]}", with: "    - {signal: x, normalize: [-10, 10]}\n    - {signal: step, normalize: [0, 1000]}")
            .write(toFile: file, atomically: true, encoding: .utf8)
        func write(_ name: String, step: @escaping (Int) -> Double) throws -> String {
            let data = dir.appendingPathComponent(name).path
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let log = try ExperienceLog.open(dataDirectory: data, gatewayID: "p1")
            let writer = try log.makeWriter()
            for k in 0..<600 {
                let x = Float(sin(Double(k) * 0.7)), nx = Float(sin(Double(k + 1) * 0.7))
                _ = writer.submit(Transition(time: 1_800_000_000 + Double(k), tick: Int64(k), episode: Int64(k / 100), state: [x, Float(step(k) / 1000)],
                                             action: (x > 0) != (k % 3 == 0) ? 1 : 0, actor: .incumbent, reward: -Double(abs(x)),
                                             nextState: [nx, Float(step(k + 1) / 1000)], mode: .shadow))
            }
            try writer.flush()
            try writer.close()
            return data
        }
        // A meter: grows by one every fourth tick, never down.
        let meter = try write("meter") { Double($0 / 4) }
        let r = try EdgeQBinary.run(["check", file, "--log", meter])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stderr.contains("\(file): warning: state input 'step' only grew over the log's 600 rows (149 changes, 0 the other way"), "\(r.stderr)")
        #expect(!r.stderr.contains("state input 'x'"), "\(r.stderr)")
        // The same counter restarting every 100 ticks (an episode's step): not warned about.
        let episodic = try write("episodic") { Double($0 % 100) }
        let e = try EdgeQBinary.run(["check", file, "--log", episodic])
        #expect(e.code == 0 && !e.stderr.contains("only grew") && !e.stderr.contains("only fell"), "\(e.stderr)")
        // Counting down: warned about as falling.
        let countdown = try write("countdown") { Double(900 - $0) }
        let c = try EdgeQBinary.run(["check", file, "--log", countdown])
        #expect(c.stderr.contains("state input 'step' only fell over the log's 600 rows (599 changes, 0 the other way"), "\(c.stderr)")
    }

    @Test func missingFileExits66() throws {
        let r = try EdgeQBinary.run(["check", "/nonexistent/\(UUID().uuidString).yaml"])
        #expect(r.code == 66)
        #expect(r.stderr.contains("cannot read the file"))
    }
}
