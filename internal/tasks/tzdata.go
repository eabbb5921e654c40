package tasks

// Maintenance windows name IANA time zones; the images of the manager and
// the task service have no zoneinfo of their own (distroless), so the
// binaries carry Go's copy of the database (about 450 KB).
import _ "time/tzdata"
