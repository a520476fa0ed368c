/// An error from the Q-network module: what went wrong and what to do about it.
///
/// A struct over a private code enum (Hummingbird style), so adding a case breaks nobody.
/// Match on `kind` when the reason matters to the caller.
public struct QNetError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, in broad terms callers can match on.
    public enum Kind: String, Sendable, Equatable {
        /// A model file could not be read or written (I/O).
        case io
        /// The file is shorter than its header says (copy interrupted?).
        case truncated
        /// The 8-byte header length or the JSON header is malformed.
        case badHeader
        /// A tensor has a dtype other than the layout requires.
        case wrongDType
        /// A tensor's shape or byte range disagrees with the header or the architecture.
        case shapeMismatch
        /// A tensor the layout requires is missing.
        case missingTensor
        /// The sha256 beside the file does not match its contents (corrupt or tampered).
        case checksumMismatch
        /// The sha256 file beside the model is missing.
        case checksumMissing
        /// The reference states do not give the recorded actions (wrong or damaged weights).
        case referenceFailed
        /// The file's format version is not one this build reads.
        case unsupportedVersion
        /// An argument (architecture, buffer size, mask) is invalid.
        case invalidArgument
    }

    /// The broad reason.
    public let kind: Kind
    /// What went wrong and what to do, for people.
    public let message: String

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// "kind: message".
    public var description: String { "\(kind.rawValue): \(message)" }
}
