// Package storagetest gives tests real, small filesystems to fill: a tmpfs
// of a given size mounted for the length of a test, and filler files that
// leave a given amount of it free. It is for tests only.
//
// Mounting needs root (CAP_SYS_ADMIN) on Linux; where it is not permitted
// the test is skipped with a message saying so, and every other failure
// fails it. Helpers take a testing.TB and undo what they did at cleanup,
// even when the test fails.
package storagetest
