// Package schedule generates seeded fault schedules for testing a Herald
// cluster: timed partitions, one-way cuts, leader isolation, crashes,
// pauses and slow links. A Schedule is a pure function of its Config (a
// seed, the nodes, the partition count, the duration and the kinds of
// fault), so a seed names a schedule; schedules are written and read as
// JSON lines, so one that found a problem is replayed exactly.
//
// A schedule never has more than a minority of its nodes down, cut off or
// paused at once, so that every partition can keep a quorum: the
// properties under test are safety (nothing acknowledged is lost,
// duplicated or reordered) and recovery, not what happens without a
// majority. Running a schedule is its consumer's job (clustertest for
// in-process clusters, herald torture for processes); nothing here does
// I/O but the JSON lines.
package schedule
