import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The package root (for topics/).
enum Repo {
    static var root: URL { PackageRoot.url }
    static var topicFiles: [String] { PackageRoot.topicFiles }
}

/// A small valid mapping used as the base of many tests.
let minimal = """
gateway: {id: t}
signals:
  - {name: a, topic: p/a}
  - {name: b, topic: p/b, json: v}
state:
  features:
    - {signal: a}
tick: {trigger: p/a}
reward: a
actions:
  list:
    - {name: one, publish: {topic: p/cmd, payload: "1"}}

"""

func diagnostics(_ yaml: String) -> [MappingDiagnostic] {
    do {
        _ = try TopicMap.parse(yaml: yaml, file: "m.yaml")
        return []
    } catch {
        return error.diagnostics
    }
}

@Suite struct LoaderTests {
    @Test func minimalFileLoadsWithDefaults() throws {
        let m = try TopicMap.parse(yaml: minimal, file: "m.yaml")
        #expect(m.gateway.id == "t")
        #expect(m.gateway.prefix == "edgeq/t")
        #expect(m.gateway.clientID == "edgeq-t")
        #expect(m.gateway.brokers == ["mqtt://127.0.0.1:1883"])
        #expect(m.gateway.startMode == .shadow)
        #expect(m.gateway.maxPayloadBytes == 65536)
        #expect(m.gateway.dataDirectory == "data")
        #expect(m.history == 1)
        #expect(m.stateWidth == 1)
        #expect(m.fallbackAction == nil)
        #expect(m.minDwell == 0)
        #expect(m.safety == SafetyConfig())
        #expect(m.learning == LearningConfig())
        #expect(m.learning.cqlWeight == 0.1)
        #expect(m.learning.minTeacherAgreement == 0.9)
        #expect(m.learning.explorationBudget == 0)
        #expect(m.tick == .trigger("p/a"))
        #expect(m.subscribedTopics == ["p/a", "p/b"])
        #expect(m.publishedTopics == ["p/cmd"])
        #expect(m.actions[0].writes[0].qos == 1)
        #expect(m.actions[0].writes[0].retain == false)
    }

    /// Every key of the reference file, read into the typed configuration.
    @Test func referenceFileKeysAreParsed() throws {
        let m = try TopicMap.load(path: Repo.root.appendingPathComponent("topics/reference.yaml").path)
        let g = m.gateway
        #expect(g.id == "boiler-house-1")
        #expect(g.brokers == ["mqtts://broker.plant.local:8883", "mqtts://broker-standby.plant.local:8883"])
        #expect(g.clientID == "edgeq-boiler-house-1")
        #expect(g.username == .environment("EDGEQ_MQTT_USER"))
        #expect(g.password == .file("/etc/edgeq/mqtt-password"))
        #expect(g.tls == TLSConfig(caFile: "/etc/edgeq/ca.pem", certFile: "/etc/edgeq/client.pem", keyFile: "/etc/edgeq/client.key"))
        #expect(g.prefix == "edgeq/boiler-house-1")
        #expect(g.dataDirectory == "/var/lib/edgeq")
        #expect(g.startMode == .shadow)
        #expect(g.maxPayloadBytes == 65536)

        let s = Dictionary(uniqueKeysWithValues: m.signals.map { ($0.name, $0) })
        #expect(s["supply_temp"]?.path == nil)
        #expect(s["supply_temp"]?.range == 0...110)
        #expect(s["supply_temp"]?.maxAge == 30)
        #expect(s["return_temp"]?.scale == 0.1)
        #expect(s["outdoor_temp"]?.path == [.key("weather"), .key("outdoor"), .index(0)])
        #expect(s["outdoor_temp"]?.maxAge == 600)
        #expect(s["burner_on"]?.kind == .bool)
        #expect(s["burner_mode"]?.kind == .enumeration(["off": 0, "low": 1, "high": 2, "fault": -1]))
        #expect(s["pump_flow"]?.topic == "boiler/pump/+/flow")
        #expect(s["supply_temp"]?.role == .controlled)
        #expect(s["outdoor_temp"]?.role == .exogenous)
        #expect(s["return_temp"]?.role == nil)
        #expect(m.modelSignalNames.controlled == ["supply_temp"] && m.modelSignalNames.exogenous == ["outdoor_temp"])

        #expect(m.features.map(\.name) == ["supply_temp", "supply_error", "return_temp", "outdoor_temp", "burner_mode", "pump_flow", "hour", "weekday"])
        #expect(m.features[0].normalization == .range(20, 90))
        #expect(m.features[1].source == .expression("supply_temp - setpoint"))
        #expect(m.features[3].normalization == .learned)
        #expect(m.features[4].normalization == Normalization.none)
        #expect(m.features[6].source == .timeOfDay)
        #expect(m.features[7].source == .dayOfWeek)
        #expect(m.featureWidth == 10)
        #expect(m.tick == .period(10))
        #expect(m.terminalSource == "burner_mode == -1")
        #expect(m.truncatedSource == "hand_mode")

        #expect(m.actions.map(\.name) == ["burner_off", "stage_down", "stage_up"])
        #expect(m.minDwell == 6)
        #expect(m.fallbackAction == nil)
        #expect(m.actions[0].writes[0].value == "0")
        #expect(m.actions[0].incumbentValue == 0)
        #expect(m.actions[1].writes[0].value == "clamp((burner_mode) + (-1), 0, 2)")
        #expect(m.actions[2].writes.count == 2)
        #expect(m.actions[2].writes[1].qos == 0)
        #expect(m.actions[2].allowed == "supply_temp < 85 and not burner_mode == -1")

        #expect(m.incumbent == IncumbentConfig(topic: "boiler/burner/cmd_incumbent", path: [.key("stage")], pathText: "stage", maxDistance: 0.5))
        #expect(m.safety.onStale == .fallback)
        #expect(m.safety.oodMargin == 0.5)
        #expect(m.safety.handOverride == "hand_mode")

        let l = m.learning
        #expect(l.hidden == [64, 64])
        #expect(l.gamma == 0.99)
        #expect(l.batchSize == 256)
        #expect(l.learningRate == 0.0005)
        #expect(l.targetUpdate == 1000)
        #expect(l.nStep == 1)
        #expect(l.cqlWeight == 0.1)
        #expect(!l.cqlOnAllTransitions && l.doubleDQN && l.polyakTau == nil && l.huberDelta == 1 && l.maxGradNorm == 10)
        #expect(l.prioritizedAlpha == nil)
        #expect(l.retrainEveryTransitions == 10000)
        #expect(l.retrainInterval == 86400)
        #expect(l.retrainSeconds == 600)
        #expect(l.retention == 90 * 86400)
        #expect(l.promotion == .trial)
        var trial = TrialConfig()
        trial.block = .ticks(96)
        trial.burnIn = 8
        #expect(l.trial == trial && l.controlShare == 0.1 && l.guardPairs == 20)
        #expect(l.rollbackMargin == 0.05)
        #expect(l.minRows == 200 && l.fqeUpdates == 4000)
    }

    /// Single keys, one case each: (extra or replaced YAML, check).
    @Test func singleKeys() throws {
        let cases: [(String, (TopicMap) -> Bool)] = [
            ("gateway: {id: t, mode: control}", { $0.gateway.startMode == .control }),
            ("gateway: {id: t, prefix: plant/x}", { $0.gateway.prefix == "plant/x" }),
            ("gateway: {id: t, max_payload: 1024}", { $0.gateway.maxPayloadBytes == 1024 }),
            ("gateway: {id: t, brokers: mqtt://h:1}", { $0.gateway.brokers == ["mqtt://h:1"] }),
            ("gateway: {id: t, client_id: c1, data: /tmp/x}", { $0.gateway.clientID == "c1" && $0.gateway.dataDirectory == "/tmp/x" }),
            ("tick: {period: 500ms}", { $0.tick == .period(0.5) }),
            ("tick: {period: 2}", { $0.tick == .period(2) }),
            ("tick: {period: 5m}", { $0.tick == .period(300) }),
            ("safety: {ood_margin: none, on_stale: hold, on_invalid: hold, on_ood: hold}",
             { $0.safety.oodMargin == nil && $0.safety.onStale == .hold && $0.safety.onInvalid == .hold && $0.safety.onOOD == .hold }),
            ("learning: {exploration: {start: 0.5, end: 0.1, decay_steps: 100, budget: 0.05}}",
             { $0.learning.epsilonStart == 0.5 && $0.learning.epsilonEnd == 0.1 && $0.learning.epsilonDecaySteps == 100 && $0.learning.explorationBudget == 0.05 }),
            ("learning: {retrain: {every_transitions: none, interval: 2h}, dueling: true, n_step: 3}",
             { $0.learning.retrainEveryTransitions == nil && $0.learning.retrainInterval == 7200 && $0.learning.dueling && $0.learning.nStep == 3 }),
            ("learning: {retrain: {every_transitions: 500, min_spacing: 30s}}",
             { $0.learning.retrainEveryTransitions == 500 && $0.learning.retrainMinSpacing == 30 }),
            ("learning: {retrain: {min_spacing: none}}", { $0.learning.retrainMinSpacing == 0 }),
            // Every retraining's time limit (default none).
            ("learning: {retrain: {seconds: 4m}}", { $0.learning.retrainSeconds == 240 }),
            ("learning: {retrain: {seconds: none}}", { $0.learning.retrainSeconds == nil }),
            ("learning: {}", { $0.learning.retrainSeconds == nil }),
            // The fitted Q evaluation's updates (default 4000; 0 or none: not run).
            ("learning: {}", { $0.learning.fqeUpdates == 4000 }),
            ("learning: {checks: {fqe_updates: 1000}}", { $0.learning.fqeUpdates == 1000 }),
            ("learning: {checks: {fqe_updates: 0}}", { $0.learning.fqeUpdates == 0 }),
            ("learning: {checks: {fqe_updates: none}}", { $0.learning.fqeUpdates == 0 }),
            // The distillation teacher's own time limit (default 180 s; none: no limit).
            ("learning: {}", { $0.learning.distill.teacherSeconds == 180 }),
            ("learning: {distill: {enabled: true, teacher_seconds: 90s}}", { $0.learning.distill.teacherSeconds == 90 }),
            ("learning: {distill: {teacher_seconds: none}}", { $0.learning.distill.teacherSeconds == nil }),
            // The student's rounds on the plant model (DAgger; default 2, 0: none).
            ("learning: {}", { $0.learning.distill.rounds == 2 }),
            ("learning: {distill: {enabled: true, rounds: 0}}", { $0.learning.distill.rounds == 0 }),
            ("learning: {distill: {rounds: 5}}", { $0.learning.distill.rounds == 5 }),
            // The distilled candidate's support box (default: the log's; taught: also its taught states).
            ("learning: {}", { $0.learning.distill.support == .log }),
            ("learning: {distill: {enabled: true, support: taught}}", { $0.learning.distill.support == .taught }),
            ("learning: {distill: {support: log}}", { $0.learning.distill.support == .log }),
            // Model rollouts (off by default; 300 starts of 50 steps, ε 0.2, λ 1, no uncertainty limit).
            ("learning: {}", { $0.learning.rollouts == RolloutConfig() && !$0.learning.rollouts.enabled && $0.learning.rollouts.starts == 300
                               && $0.learning.rollouts.horizon == 50 && $0.learning.rollouts.epsilon == 0.2 && $0.learning.rollouts.uncertaintyPenalty == 1
                               && $0.learning.rollouts.maxUncertainty == nil }),
            ("learning: {rollouts: {enabled: true, starts: 500, horizon: 10, epsilon: 0, uncertainty_penalty: 0.5, max_uncertainty: 0.2}}", {
                let r = $0.learning.rollouts
                return r.enabled && r.starts == 500 && r.horizon == 10 && r.epsilon == 0 && r.uncertaintyPenalty == 0.5 && r.maxUncertainty == 0.2
            }),
            ("learning: {rollouts: {enabled: true, max_uncertainty: none}}", { $0.learning.rollouts.enabled && $0.learning.rollouts.maxUncertainty == nil }),
            // The distilled candidate's teacher agreement limit (default 0.9).
            ("learning: {checks: {teacher_agreement: 0.75}}", { $0.learning.minTeacherAgreement == 0.75 }),
            ("learning: {checks: {agreement_tie: 0}}", { $0.learning.agreementTie == 0 }),
            ("learning: {checks: {agreement_tie: 0.1}}", { $0.learning.agreementTie == 0.1 }),
            ("learning: {}", { $0.learning.retrainMinSpacing == 600 }),
            ("learning: {hidden: [32], batch_size: 64, learning_rate: 0.001, target_update: 10, cql_weight: 0, updates_per_retrain: 5, retention: 7d}",
             { $0.learning.hidden == [32] && $0.learning.batchSize == 64 && $0.learning.learningRate == 0.001 && $0.learning.targetUpdate == 10
                 && $0.learning.cqlWeight == 0 && $0.learning.updatesPerRetrain == 5 && $0.learning.retention == 7 * 86400 }),
            ("learning: {huber_delta: 2.5, max_grad_norm: 0.5, polyak_tau: 0.005, double_dqn: false, cql_on_all_transitions: true}",
             { $0.learning.huberDelta == 2.5 && $0.learning.maxGradNorm == 0.5 && $0.learning.polyakTau == 0.005
                 && !$0.learning.doubleDQN && $0.learning.cqlOnAllTransitions }),
            ("learning: {polyak_tau: none, prioritized_replay: none}", { $0.learning.polyakTau == nil && $0.learning.prioritizedAlpha == nil }),
            ("learning: {prioritized_replay: {alpha: 0.7, beta: 0.5, beta_anneal_updates: 5000}}",
             { $0.learning.prioritizedAlpha == 0.7 && $0.learning.prioritizedBeta == 0.5 && $0.learning.betaAnnealUpdates == 5000 }),
            ("learning: {prioritized_replay: {}}", { $0.learning.prioritizedAlpha == 0.6 && $0.learning.prioritizedBeta == 0.4 }),
            ("learning: {promotion: {policy: auto, min_agreement: 0.8, rollback_margin: 0.1}}",
             { $0.learning.promotion == .auto && $0.learning.minAgreement == 0.8 && $0.learning.rollbackMargin == 0.1 }),
            // promotion: trial is the default; its section and the control group's keys
            ("learning: {}", { $0.learning.promotion == .trial && $0.learning.trial == TrialConfig() && $0.learning.controlShare == 0.1 && $0.learning.guardPairs == 20
                 && $0.learning.probationPairs == 0 && $0.learning.noveltyPairs == 4 }),
            ("learning: {promotion: {probation_pairs: 6}}", { $0.learning.probationPairs == 6 }),
            ("learning: {promotion: {novelty_pairs: 0}}", { $0.learning.noveltyPairs == 0 }),
            ("learning: {promotion: {policy: trial, trial: {block: 48, burn_in: 4, confidence: 0.9, margin: 0.02, max_pairs: 20, max_ticks: 5000, min_pairs: 3}, control_share: 0.05, guard_pairs: 10}}",
             { let t = $0.learning.trial
                 return $0.learning.promotion == .trial && t.block == .ticks(48) && t.burnIn == 4 && t.confidence == 0.9 && t.margin == 0.02
                     && t.maxPairs == 20 && t.maxTicks == 5000 && t.minPairs == 3 && $0.learning.controlShare == 0.05 && $0.learning.guardPairs == 10 }),
            ("terminal: a > 3\nlearning: {promotion: {trial: {block: episode}}}", { $0.learning.trial.block == .episode && $0.learning.trial.burnIn == 0 }),
            // the last look's share of the error budget: 0.5 by default, a number, or even
            ("learning: {}", { $0.learning.trial.lastLookShare == 0.5 }),
            ("learning: {promotion: {trial: {last_look: 0.8}}}", { $0.learning.trial.lastLookShare == 0.8 }),
            ("learning: {promotion: {trial: {last_look: even}}}", { $0.learning.trial.lastLookShare == nil }),
            ("learning: {}", { $0.learning.trial.futility == 0.01 }),
            ("learning: {promotion: {trial: {futility: 0.02}}}", { $0.learning.trial.futility == 0.02 }),
            ("learning: {promotion: {trial: {futility: none}}}", { $0.learning.trial.futility == nil }),
            ("learning: {}", { $0.learning.trial.stopLoss == 0.5 }),
            ("learning: {promotion: {trial: {stop_loss: 0.8}}}", { $0.learning.trial.stopLoss == 0.8 }),
            ("learning: {promotion: {trial: {stop_loss: none}}}", { $0.learning.trial.stopLoss == nil }),
            ("learning: {}", { $0.learning.trial.earlyStop }),
            ("learning: {promotion: {trial: {early_stop: false}}}", { !$0.learning.trial.earlyStop }),
            ("learning: {promotion: {policy: manual, control_share: 0, trial: {max_ticks: null}}}",
             { $0.learning.promotion == .manual && $0.learning.controlShare == 0 && $0.learning.trial.maxTicks == nil }),
            ("learning: {promotion: {trial: {block: 4}}}", { $0.learning.trial.block == .ticks(4) && $0.learning.trial.burnIn == 0 }),
            ("learning: {promotion: {trial: {adjust: none}}}", { $0.learning.trial.adjust == TrialConfig.Adjustment.none }),
            ("learning: {promotion: {trial: {adjust: exogenous}}}", { $0.learning.trial.adjust == .exogenous && TrialConfig().adjust == .exogenous }),
            ("terminal: a > 3", { $0.terminalSource == "a > 3" }),
            ("truncated: b", { $0.truncatedSource == "b" }),
        ]
        for (yaml, check) in cases {
            let key = String(yaml.prefix { $0 != ":" })
            let base = minimal.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix(key + ":") }.joined(separator: "\n")
            let m = try TopicMap.parse(yaml: base + yaml + "\n")
            #expect(check(m), "\(yaml)")
        }
    }

    /// A Sparkplug B metric as a signal's source: its data topic, no topic route of its own.
    @Test func sparkplugSignalSource() throws {
        let yaml = minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, sparkplug: {group: g1, node: plc, device: burner, metric: Supply/Temp}}")
            .replacingOccurrences(of: "{name: b, topic: p/b, json: v}", with: "{name: b, topic: p/b, json: v}\n  - {name: c, sparkplug: {group: g1, node: plc, metric: Node/Ambient}, type: bool}")
            .replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {trigger: p/t}")
        let m = try TopicMap.parse(yaml: yaml)
        #expect(m.signals[0].sparkplug == SparkplugSource(group: "g1", node: "plc", device: "burner", metric: "Supply/Temp"))
        #expect(m.signals[0].topic == "spBv1.0/g1/DDATA/plc/burner")
        #expect(m.signals[2].sparkplug?.device == nil && m.signals[2].topic == "spBv1.0/g1/NDATA/plc" && m.signals[2].kind == .bool)
        #expect(m.sparkplugSignals == [0, 2])
        #expect(m.subscribedTopics == ["p/b", "p/t"])
        // A Sparkplug write: its command topic and a {{value}} payload.
        let w = try TopicMap.parse(yaml: yaml.replacingOccurrences(of: "publish: {topic: p/cmd, payload: \"1\"}",
                                                                   with: "publish: {sparkplug: {group: g1, node: plc, device: burner, metric: Burner/Stage, type: UInt8}, value: 3}"))
        #expect(w.actions[0].writes[0].sparkplug == SparkplugWrite(group: "g1", node: "plc", device: "burner", metric: "Burner/Stage", datatype: .uint8))
        #expect(w.actions[0].writes[0].topic == "spBv1.0/g1/DCMD/plc/burner" && w.actions[0].incumbentValue == 3)
        // Two signals may not read one metric.
        let twice = yaml.replacingOccurrences(of: "metric: Node/Ambient", with: "device: burner, metric: Supply/Temp")
        #expect(throws: MappingError.self) { try TopicMap.parse(yaml: twice) }
    }

    /// Each error with its exact line and column.
    @Test(arguments: [
        // unknown key, with a suggestion
        (minimal.replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {triger: p/a}"),
         8, 8, "unknown key 'triger' in tick; did you mean 'trigger'?"),
        (minimal + "rewards: 1\n", 13, 1, "unknown key 'rewards' in the mapping file; did you mean 'reward'?"),
        // wrong type
        (minimal.replacingOccurrences(of: "gateway: {id: t}", with: "gateway: {id: t, max_payload: big}"),
         1, 31, "max_payload must be a whole number, found 'big'"),
        (minimal.replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {trigger: [p/a]}"), 8, 17, "tick trigger must be a text, found a list"),
        (minimal.replacingOccurrences(of: "{signal: a}", with: "{signal: a, normalize: [0, x]}"), 7, 34, "normalize range max must be a number, found 'x'"),
        // missing required key
        (minimal.replacingOccurrences(of: "reward: a\n", with: ""), 1, 1, "missing required key 'reward' in the mapping file"),
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a}"), 3, 5,
         "signal 'a' needs 'topic' (an MQTT topic) or 'sparkplug' (a Sparkplug B metric: {group, node, device, metric})"),
        // Sparkplug B writes
        (minimal.replacingOccurrences(of: "publish: {topic: p/cmd, payload: \"1\"}", with: "publish: {sparkplug: {group: g, node: n, metric: m, type: Int33}, value: 1}"), 12, 77,
         "Sparkplug datatype 'Int33' cannot be written: give one of Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64, Float, Double, Boolean; did you mean 'Int32'?"),
        (minimal.replacingOccurrences(of: "publish: {topic: p/cmd, payload: \"1\"}", with: "publish: {sparkplug: {group: g, node: n, metric: m, type: Int32}}"), 12, 40,
         "a Sparkplug write needs 'value' (or 'step'): the number the metric is set to"),
        // Sparkplug B sources
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, topic: p/a, sparkplug: {group: g, node: n, metric: m}}"), 3, 22,
         "signal 'a' gives both 'topic' and 'sparkplug': a Sparkplug metric's topic follows from its group, node and device; remove 'topic'"),
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, sparkplug: {group: g/1, node: n, metric: m}}"), 3, 34,
         "Sparkplug group id 'g/1': an id is one topic level: no '/', '+' or '#'"),
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, sparkplug: {group: g, node: n}}"), 3, 26,
         "missing required key 'metric' in sparkplug source of signal 'a'"),
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, topic: spBv1.0/g/DDATA/n/d}"), 3, 22,
         "topic 'spBv1.0/g/DDATA/n/d' is in the Sparkplug B namespace, whose payloads are protobuf: read the metric with 'sparkplug: {group, node, device, metric}' instead of 'topic'"),
        // unknown signal in an expression (column of the name)
        (minimal.replacingOccurrences(of: "reward: a", with: "reward: a + bb * 2"), 9, 13, "in reward: unknown signal or feature 'bb'; did you mean 'b'?"),
        (minimal.replacingOccurrences(of: "reward: a", with: "reward: 'a + (b'"), 9, 16, "in reward: expected ')' to close the '(' at column 5"),
        // duplicate names
        (minimal.replacingOccurrences(of: "{name: b, topic: p/b, json: v}", with: "{name: a, topic: p/b, json: v}"),
         4, 12, "duplicate signal name 'a' (first declared at line 3)"),
        (minimal + "    - {name: one, publish: {topic: p/c, payload: \"2\"}}\n", 13, 14, "duplicate action name 'one' (first at line 12)"),
        // invalid topic filters
        (minimal.replacingOccurrences(of: "{name: b, topic: p/b, json: v}", with: "{name: b, topic: p/b+, json: v}"),
         4, 22, "invalid topic filter 'p/b+': '+' must occupy a whole topic level"),
        (minimal.replacingOccurrences(of: "{topic: p/cmd,", with: "{topic: p/+/cmd,"), 12, 36, "invalid publish topic 'p/+/cmd'"),
        // empty action list
        (minimal.replacingOccurrences(of: "    - {name: one, publish: {topic: p/cmd, payload: \"1\"}}\n", with: "").replacingOccurrences(of: "  list:", with: "  list: []"),
         11, 9, "actions list is empty"),
        // a range with min >= max
        (minimal.replacingOccurrences(of: "{name: a, topic: p/a}", with: "{name: a, topic: p/a, range: [3, 3]}"),
         3, 34, "range [3, 3] is empty: min must be less than max"),
        // an action publishing to a sensor topic
        (minimal.replacingOccurrences(of: "{topic: p/cmd,", with: "{topic: p/b,"), 12, 36, "publishes to 'p/b', which is also read as a sensor (signal 'b', line 4)"),
        // inline secret
        (minimal.replacingOccurrences(of: "gateway: {id: t}", with: "gateway: {id: t, password: hunter2}"), 1, 28, "password must not be written inline"),
        // fallback to an unknown action
        (minimal.replacingOccurrences(of: "  list:", with: "  fallback: onee\n  list:"), 11, 13, "fallback 'onee' is not an action (nor 'hold'); did you mean 'one'?"),
        // template placeholder unknown; JSON template broken
        (minimal.replacingOccurrences(of: "payload: \"1\"", with: "payload: '{\"x\":{{zz}}}'"), 12, 58, "payload template: unknown placeholder '{{zz}}'"),
        (minimal.replacingOccurrences(of: "payload: \"1\"", with: "payload: '{\"x\":{{a}}'"), 12, 52, "payload looks like JSON but is not valid JSON"),
        // wrong enum choice
        (minimal.replacingOccurrences(of: "gateway: {id: t}", with: "gateway: {id: t, mode: contrl}"), 1, 24, "mode must be one of shadow, control, found 'contrl'; did you mean 'control'?"),
        // duplicate YAML key
        (minimal + "reward: b\n", 9, 1, "duplicate key"),
        // incumbent without values on actions
        (minimal + "incumbent: {topic: p/inc}\n", 12, 7, "action 'one' needs 'incumbent_value'"),
        // learning range
        (minimal + "learning: {gamma: 1.5}\n", 13, 19, "gamma must be in [0, 1), found 1.5"),
        // the learner's settings
        (minimal + "learning: {huber_delta: 0}\n", 13, 25, "huber_delta must be > 0, found 0"),
        (minimal + "learning: {max_grad_norm: -1}\n", 13, 27, "max_grad_norm must be > 0, found -1"),
        (minimal + "learning: {polyak_tau: 1.5}\n", 13, 24, "polyak_tau must be in (0, 1] (or none for hard copies every target_update), found 1.5"),
        (minimal + "learning: {prioritized_replay: {alpha: 2}}\n", 13, 40, "prioritized_replay alpha must be in (0, 1], found 2"),
        (minimal + "learning: {prioritized_replay: {beta: 1.5}}\n", 13, 39, "prioritized_replay beta must be in [0, 1], found 1.5"),
        (minimal + "learning: {double_dqn: maybe}\n", 13, 24, "double_dqn must be true or false, found 'maybe'"),
        (minimal + "learning: {checks: {teacher_agreement: 1.5}}\n", 13, 40, "teacher_agreement must be in [0, 1]"),
        (minimal + "learning: {checks: {agreement_tie: -0.1}}\n", 13, 36, "agreement_tie must be in [0, 1]"),
        (minimal + "learning: {checks: {fqe_updates: -1}}\n", 13, 34,
         "fqe_updates (the fitted Q evaluation's updates, or none) must be in 0...10000000, found -1"),
        (minimal + "learning: {distill: {teacher_seconds: soon}}\n", 13, 39,
         "distill teacher_seconds (the teacher's time limit, or none) must be a positive duration (seconds, or e.g. 500ms, 30s, 5m, 2h, 7d), found 'soon'"),
        (minimal + "learning: {distill: {rounds: 11}}\n", 13, 30,
         "distill rounds (the student's rounds on the plant model, 0 for none) must be in 0...10, found 11"),
        (minimal + "learning: {distill: {support: visited}}\n", 13, 31,
         "distill support (the distilled candidate's support box: the log's states, or also those it was taught on) must be one of log, taught, found 'visited'"),
        (minimal + "learning: {prioritized_replay: {alpah: 0.5}}\n", 13, 33, "unknown key 'alpah' in prioritized_replay"),
        (minimal + "learning: {rollouts: {epsilon: 2}}\n", 13, 32, "rollouts epsilon must be in [0, 1] (the share of random decisions in a rollout)"),
        (minimal + "learning: {rollouts: {uncertainty_penalty: -1}}\n", 13, 44, "rollouts uncertainty_penalty must be a finite number ≥ 0 (0: no penalty)"),
        (minimal + "learning: {rollouts: {max_uncertainty: 0}}\n", 13, 40, "rollouts max_uncertainty must be > 0, or none for no limit"),
        (minimal + "learning: {rollouts: {horizon: 0}}\n", 13, 32, "rollouts horizon must be in 1...10000, found 0"),
        (minimal + "learning: {rollouts: {horizn: 5}}\n", 13, 23, "unknown key 'horizn' in rollouts"),
        (minimal + "learning: {rollouts: {starts: 100000, horizon: 1000}}\n", 13, 22,
         "rollouts starts × horizon is 100000000 synthetic transitions a retraining; at most 10000000 fit beside the log in the replay: fewer starts or a shorter horizon"),
        // promotion: shadow-first was replaced by trial; the trial's and control group's settings
        (minimal + "learning: {promotion: {policy: shadow-first}}\n", 13, 32, "promotion policy 'shadow-first' was replaced by 'trial'"),
        (minimal + "learning: {promotion: {policy: tral}}\n", 13, 32, "promotion policy must be one of trial, manual, auto, found 'tral'; did you mean 'trial'?"),
        (minimal + "learning: {promotion: {shadow_ticks: 30}}\n", 13, 24, "shadow_ticks belonged to the shadow-first policy, which was replaced by 'trial'"),
        (minimal + "learning: {promotion: {trial: {block: 0}}}\n", 13, 39, "trial block must be ≥ 1 tick"),
        (minimal + "learning: {promotion: {trial: {block: often}}}\n", 13, 39, "trial block must be a whole number of ticks or 'episode', found 'often'"),
        (minimal + "learning: {promotion: {trial: {blocks: 96}}}\n", 13, 32, "unknown key 'blocks' in trial; did you mean 'block'?"),
        (minimal + "learning: {promotion: {trial: {adjust: cuped}}}\n", 13, 40, "trial adjust must be one of exogenous, none, found 'cuped'"),
        (minimal + "learning: {promotion: {trial: {adjust: exogenus}}}\n", 13, 40, "trial adjust must be one of exogenous, none, found 'exogenus'; did you mean 'exogenous'?"),
        (minimal + "learning: {promotion: {trial: {block: 8, burn_in: 8}}}\n", 13, 51, "trial burn_in (8) must be less than the block (8 ticks)"),
        (minimal + "learning: {promotion: {trial: {confidence: 1}}}\n", 13, 44, "trial confidence must be in (0.5, 1), e.g. 0.95, found 1"),
        (minimal + "learning: {promotion: {trial: {confidence: 0.5}}}\n", 13, 44, "trial confidence must be in (0.5, 1), e.g. 0.95, found 0.5"),
        (minimal + "learning: {promotion: {trial: {stop_confidence: 1.5}}}\n", 13, 49, "trial stop_confidence must be in (0.5, 1), e.g. 0.9, or null (stop only with the promotion's corrected confidence), found 1.5"),
        (minimal + "learning: {promotion: {trial: {margin: -0.1}}}\n", 13, 40, "trial margin must be in [0, 1)"),
        (minimal.replacingOccurrences(of: "    - {signal: a}", with: "    - {signal: a, support_margin: -1}"), 7, 35,
         "feature support_margin must be ≥ 0 (a share of each of the feature's inputs' training range, e.g. 0.1) or none (its inputs are not checked), found -1"),
        (minimal.replacingOccurrences(of: "    - {signal: a}", with: "    - {signal: a, support_margin: wide}"), 7, 35,
         "feature support_margin must be a number, found 'wide'"),
        (minimal + "learning: {promotion: {trial: {last_look: 1}}}\n", 13, 43,
         "trial last_look must be in (0, 1), e.g. 0.5 (the share of 1 − confidence spent at the budget's last look), or 'even' (every look the same level), found 1"),
        (minimal + "learning: {promotion: {trial: {last_look: often}}}\n", 13, 43, "trial last_look (a share in (0, 1), or even) must be a number, found 'often'"),
        (minimal + "learning: {promotion: {trial: {futility: 0}}}\n", 13, 42,
         "trial futility must be in (0, 1), e.g. 0.01 (stop when the candidate is shown not to be better than this share of the reference's block return), or none (no futility stop), found 0"),
        (minimal + "learning: {promotion: {trial: {futility: small}}}\n", 13, 42, "trial futility (a share in (0, 1), or none) must be a number, found 'small'"),
        (minimal + "learning: {promotion: {trial: {stop_loss: 0}}}\n", 13, 43,
         "trial stop_loss must be in (0, 10], e.g. 0.5 (reject at once when the candidate's block has lost half a reference block), or none (no stop-loss), found 0"),
        (minimal + "learning: {promotion: {trial: {stop_loss: half}}}\n", 13, 43,
         "trial stop_loss (a share > 0 of the reference's block return, or none) must be a number, found 'half'"),
        (minimal + "learning: {promotion: {trial: {early_stop: sometimes}}}\n", 13, 44, "trial early_stop must be true or false, found 'sometimes'"),
        (minimal + "learning: {promotion: {trial: {min_pairs: 1}}}\n", 13, 43, "trial min_pairs must be in 2...100000, found 1"),
        (minimal + "learning: {promotion: {trial: {block: 96, max_pairs: 3}}}\n", 13, 54, "trial max_pairs (3) must be at least min_pairs (4)"),
        (minimal + "learning: {promotion: {control_share: 0.6}}\n", 13, 39, "control_share must be in [0, 0.5]"),
        (minimal + "learning: {promotion: {control_share: -0.1}}\n", 13, 39, "control_share must be in [0, 0.5]"),
        (minimal + "learning: {promotion: {probation_pairs: -1}}\n", 13, 41, "probation_pairs (the control-group guard's first pairs after a promotion"),
        (minimal + "learning: {promotion: {novelty_pairs: -2}}\n", 13, 39, "novelty_pairs (the control-group guard's pairs, a control block beside every served block, when an exogenous signal leaves"),
        (minimal + "learning: {promotion: {trial: {block: episode}}}\n", 13, 39, "trial block 'episode' needs the mapping to say when an episode ends"),
        (minimal + "terminal: a > 3\nlearning: {promotion: {trial: {block: episode, burn_in: 4}}}\n", 14, 57, "trial burn_in applies to blocks of ticks"),
        // YAML syntax error
        ("gateway: {id: t\nsignals: [\n", 2, 8, "YAML syntax: did not find expected"),
        // tick continuity: the sequence names a signal, only with a trigger; max_gap beyond the period
        (minimal.replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {trigger: p/a, sequence: aa}"), 8, 32, "tick sequence 'aa' is not a signal; did you mean 'a'?"),
        (minimal.replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {period: 1s, sequence: a}"), 8, 30, "tick sequence counts the plant's steps"),
        (minimal.replacingOccurrences(of: "tick: {trigger: p/a}", with: "tick: {period: 2s, max_gap: 1s}"), 8, 29, "must be longer than the period"),
        // the plant's report of what it applied must not share a topic with the gateway's commands
        (minimal + "applied: {topic: p/cmd}\n", 13, 18, "applied topic 'p/cmd' is also where action 'one' publishes"),
    ] as [(String, Int, Int, String)])
    func errorIsReportedAtItsPlace(yaml: String, line: Int, column: Int, message: String) {
        let d = diagnostics(yaml)
        let hit = d.first { $0.line == line && $0.column == column && $0.message.contains(message) }
        #expect(hit != nil, "expected m.yaml:\(line):\(column): …\(message)…, got:\n\(d.map(\.description).joined(separator: "\n"))")
        #expect(hit?.description.hasPrefix("m.yaml:\(line):\(column): ") ?? false)
    }

    @Test func allErrorsAreCollectedInFileOrder() {
        let yaml = """
        gateway: {id: t, brokrs: x}
        signals:
          - {name: a, topic: p/a, range: [2, 1]}
          - {name: a, topic: "p/#"}
        state: {features: [{signal: zz}]}
        tick: {period: -1}
        reward: a +
        actions: {list: []}
        """
        let d = diagnostics(yaml)
        #expect(d.count >= 7, "\(d)")
        #expect(d.map(\.line) == d.map(\.line).sorted())
        for line in [1, 3, 4, 5, 6, 7, 8] { #expect(d.contains { $0.line == line }, "no error on line \(line): \(d)") }
    }

    @Test func unreadableFileIsReported() {
        do {
            _ = try TopicMap.load(path: "/nonexistent/edgeq-\(UUID().uuidString).yaml")
            Issue.record("loading a missing file succeeded")
        } catch {
            #expect(error.code == .unreadable)
        }
    }

    @Test func everyTopicsFileLoads() throws {
        let files = Repo.topicFiles
        #expect(files.count >= 5)
        for f in files {
            #expect(throws: Never.self, "\(f)") { _ = try TopicMap.load(path: f) }
        }
    }

    @Test func thermalExampleHasWhatLearningNeeds() throws {
        let m = try TopicMap.load(path: Repo.root.appendingPathComponent("topics/thermal.yaml").path)
        #expect(m.signals.contains { $0.name == "occupied_next_2h" })
        #expect(m.signals.contains { $0.name == "price_next_2h" })
        #expect(m.features.contains { if case .cyclic = $0.source { return true } else { return false } })
        #expect(m.incumbent?.topic == "plant/thermal/cmd")
        #expect(m.learning.cqlWeight == 0.1)
        #expect(m.learning.explorationBudget == 0)
        #expect(m.rewardSource.contains("energy_cost") && m.rewardSource.contains("comfort_violation"))
        // Its phases (read by cyclic features): no mean of them is a condition a trial records.
        #expect(Set(m.cyclicSignals.map { m.signals[$0].name }) == ["hour", "weekday"])
    }
}

@Suite struct ControlPlaneSectionTests {
    @Test func authDefaultsToSignedAndTakesNone() throws {
        #expect(try TopicMap.parse(yaml: minimal, file: "m.yaml").controlPlane.auth == .signed)
        #expect(try TopicMap.parse(yaml: minimal + "control_plane: {auth: none}\n", file: "m.yaml").controlPlane.auth == .none)
        #expect(try TopicMap.parse(yaml: minimal + "control_plane:\n  auth: signed\n", file: "m.yaml").controlPlane.auth == .signed)
    }

    @Test func aWrongValueOrKeyIsReportedAtItsPlace() {
        let lines = minimal.split(separator: "\n", omittingEmptySubsequences: false).count
        let bad = diagnostics(minimal + "control_plane:\n  auth: nope\n")
        #expect(bad.count == 1)
        #expect(bad.first?.line == lines + 1 && bad.first?.column == 9, "\(bad)")
        #expect(bad.first?.message.contains("signed, none") == true, "\(bad)")
        let unknown = diagnostics(minimal + "control_plane:\n  aut: none\n")
        #expect(unknown.first?.message.contains("did you mean 'auth'") == true, "\(unknown)")
        #expect(unknown.first?.line == lines + 1, "\(unknown)")
    }
}
