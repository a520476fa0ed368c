import EdgeQTestSupport
import Foundation
import Testing

@Suite struct CLITests {
    @Test func helpListsTheSubcommands() throws {
        let r = try EdgeQBinary.run(["--help"])
        #expect(r.code == 0)
        for sub in ["check", "bench", "report"] {
            #expect(r.stdout.contains(sub), "edgeq --help does not list \(sub):\n\(r.stdout)")
        }
    }

    @Test func benchRejectsAnUnknownName() throws {
        let r = try EdgeQBinary.run(["bench", "nonsense"])
        #expect(r.code == 64)
        #expect(r.stderr.contains("nonsense"))
    }
}
