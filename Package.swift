// swift-tools-version: 6.0
// EdgeQ: an MQTT control gateway with an on-device int8 deep Q-network.
// Dependencies point one way: gateway → {topic map, Q-network, learner, log, MQTT}.
// Each C library has its own system-library target, imported by one Swift module only.
import PackageDescription

/// Numerical targets are compiled with optimisation even in debug builds: the tests
/// train small networks and a debug-built kernel is 10–100× slower, which would make
/// the suite too slow to run on every change. Semantics are unchanged (-O keeps
/// overflow and bounds checks).
let numericSettings: [SwiftSetting] = [
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
    name: "EdgeQ",
    // Built and tested on Linux (glibc) only; no Apple platform is declared (docs/architecture.md, "Build").
    products: [
        .executable(name: "edgeq", targets: ["edgeq"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        /// Ed25519 signatures and SHA-256 (BoringSSL underneath): commands, models, checksums.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        /// Sparkplug B payloads (protobuf): the runtime library only; the generated code is committed.
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // MARK: C shims (module map + one header each)
        .systemLibrary(
            name: "CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        /// zlib: the fleet batches' deflated body (EdgeQLog), and the tests' compressed-JSON comparison.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),

        // MARK: Parts
        /// Child processes with a clean signal mask, free ports, a mosquitto launcher:
        /// used by the CLI (bench, demo) and by the tests' broker fixture.
        .target(name: "EdgeQSystem", dependencies: ["CEdgeQProcess", "EdgeQCore"]),
        /// Process-wide memory settings (malloc arenas, start-up pages) for `edgeq run`.
        .target(name: "CEdgeQProcess"),
        /// Small shared pieces with no dependencies: the seeded random generator.
        .target(name: "EdgeQCore", swiftSettings: numericSettings),
        .target(
            name: "EdgeQMQTT",
            dependencies: ["CMosquitto", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "EdgeQTopicMap",
            dependencies: ["Yams", "EdgeQCore"]
        ),
        /// The int8 inference kernels in C (AVX2 chosen at run time, portable fallback):
        /// Swift at the baseline x86-64 target measured 10× slower than the C floor.
        /// Sparkplug B (Eclipse Tahu spec 3.0): the payload schema (its generated Swift code is
        /// committed; docs/architecture.md, "Sparkplug B"), signals from metrics, commands.
        .target(
            name: "EdgeQSparkplug",
            dependencies: ["EdgeQTopicMap", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["Proto"]
        ),
        .target(
            name: "CEdgeQKernels",
            cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off", "-fno-math-errno"])]
        ),
        .target(
            name: "EdgeQNet",
            dependencies: ["COpenBLAS", "CEdgeQKernels", "EdgeQCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: numericSettings
        ),
        .target(
            name: "EdgeQPlants",
            dependencies: ["EdgeQCore"],
            swiftSettings: numericSettings
        ),
        /// The plant model learned from the log (system identification, an MLP ensemble), the
        /// planner that uses it, and the fit report (docs/learning.md, "The plant model").
        .target(
            name: "EdgeQModel",
            dependencies: ["EdgeQNet", "EdgeQCore", "COpenBLAS", "CEdgeQKernels"],
            swiftSettings: numericSettings
        ),
        .target(
            name: "EdgeQLearner",
            dependencies: ["EdgeQNet", "EdgeQCore"],
            swiftSettings: numericSettings
        ),
        .target(
            name: "EdgeQLog",
            dependencies: ["CSQLite", "CZlib", "EdgeQCore", .product(name: "Logging", package: "swift-log")]
        ),
        /// Trust: trusted keys by role, signed control-plane commands (replay, freshness, rate
        /// limit), signed models, the mapping's fingerprint (docs/security.md).
        .target(
            name: "EdgeQTrust",
            dependencies: ["EdgeQTopicMap", "EdgeQCore", .product(name: "Crypto", package: "swift-crypto")]
        ),
        /// The retraining pipeline (log → Double DQN → checks → candidate) and its report: used by
        /// the gateway's `cmd/retrain`, `edgeq train`, the lab and the benchmarks alike; and the
        /// reader that turns the log into the plant model's data (`PlantDataReader`).
        .target(
            name: "EdgeQRetrain",
            dependencies: ["EdgeQLearner", "EdgeQLog", "EdgeQNet", "EdgeQTopicMap", "EdgeQCore", "EdgeQModel"],
            swiftSettings: numericSettings
        ),
        .target(
            name: "EdgeQGateway",
            dependencies: [
                "EdgeQMQTT", "EdgeQTopicMap", "EdgeQNet", "EdgeQLearner", "EdgeQLog", "EdgeQCore", "EdgeQRetrain", "EdgeQTrust", "EdgeQModel",
                "EdgeQSparkplug",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        /// The learning lab: plants driven in process through a mapping file, logging like the
        /// gateway (docs/learning.md, "The lab"). Numeric: tests train and evaluate policies.
        .target(
            name: "EdgeQLab",
            dependencies: ["EdgeQGateway", "EdgeQRetrain", "EdgeQPlants", "EdgeQModel", "EdgeQTopicMap", "EdgeQNet", "EdgeQLearner", "EdgeQLog", "EdgeQCore"],
            swiftSettings: numericSettings
        ),
        /// The run report (`edgeq report`): the log summed up in SQL, the model store's history and
        /// a saved metrics scrape, as one self-contained HTML page (docs/operations.md, "The run report").
        .target(
            name: "EdgeQReport",
            dependencies: ["EdgeQLog", "EdgeQCore"]
        ),
        .target(
            name: "EdgeQSimulators",
            dependencies: ["EdgeQMQTT", "EdgeQPlants", "EdgeQCore", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "edgeq",
            dependencies: [
                "EdgeQCore", "EdgeQMQTT", "EdgeQTopicMap", "EdgeQNet", "EdgeQLearner", "EdgeQLog",
                "EdgeQPlants", "EdgeQModel", "EdgeQGateway", "EdgeQRetrain", "EdgeQSystem", "EdgeQSimulators", "EdgeQLab", "EdgeQTrust", "EdgeQReport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: numericSettings
        ),

        // MARK: Tests
        .target(
            name: "EdgeQTestSupport",
            dependencies: ["EdgeQSystem"],
            path: "Tests/EdgeQTestSupport"
        ),
        .testTarget(name: "EdgeQMQTTTests", dependencies: ["EdgeQMQTT", "EdgeQTestSupport"]),
        .testTarget(name: "EdgeQTopicMapTests", dependencies: ["EdgeQTopicMap", "EdgeQCore", "EdgeQTestSupport"]),
        .testTarget(name: "EdgeQNetTests", dependencies: ["EdgeQNet", "CEdgeQKernels", "EdgeQSystem", "EdgeQTestSupport"], exclude: ["python"]),
        .testTarget(name: "EdgeQLearnerTests", dependencies: ["EdgeQLearner", "EdgeQNet", "EdgeQPlants", "EdgeQCore", "EdgeQLab"]),
        .testTarget(name: "EdgeQPlantsTests", dependencies: ["EdgeQPlants", "EdgeQCore"]),
        .testTarget(name: "EdgeQModelTests", dependencies: ["EdgeQModel", "EdgeQPlants", "EdgeQCore", "EdgeQLab"]),
        .testTarget(name: "EdgeQLogTests", dependencies: ["EdgeQLog", "EdgeQTestSupport", "CZlib"]),
        .testTarget(
            name: "EdgeQGatewayTests",
            dependencies: ["EdgeQGateway", "EdgeQReport", "EdgeQCore", "EdgeQRetrain", "EdgeQModel", "EdgeQTopicMap", "EdgeQNet", "EdgeQMQTT", "EdgeQLog",
                           "EdgeQSimulators", "EdgeQTestSupport", "EdgeQTrust", "EdgeQSparkplug",
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["python"]  // the Sparkplug B peer (pysparkplug), run as a child process
        ),
        .testTarget(name: "EdgeQLabTests", dependencies: ["EdgeQLab", "EdgeQGateway", "EdgeQRetrain", "EdgeQModel", "EdgeQTopicMap", "EdgeQNet", "EdgeQLog", "EdgeQPlants", "EdgeQLearner", "EdgeQCore"]),
        .testTarget(name: "EdgeQSimulatorsTests", dependencies: ["EdgeQSimulators", "EdgeQPlants", "EdgeQMQTT", "EdgeQTestSupport"]),
        .testTarget(
            name: "EdgeQTrustTests",
            dependencies: ["EdgeQTrust", "EdgeQTopicMap", "EdgeQMQTT", "EdgeQTestSupport", .product(name: "Logging", package: "swift-log")],
            exclude: ["python"]
        ),
        .testTarget(name: "EdgeQCLITests", dependencies: ["EdgeQTestSupport", "EdgeQCore", "EdgeQMQTT", "EdgeQLog", "EdgeQGateway", "EdgeQNet", "EdgeQTopicMap", "EdgeQTrust"]),
    ],
    swiftLanguageModes: [.v6]
)
