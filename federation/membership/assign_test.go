package membership

import (
	"fmt"
	"slices"
	"testing"
)

func TestAssignIsDeterministicAndOrderFree(t *testing.T) {
	ws := []Member{{Name: "a", Slots: 1}, {Name: "b", Slots: 2}, {Name: "c", Slots: 1}}
	a := Assign(50, ws)
	b := Assign(50, []Member{ws[2], ws[0], ws[1]})
	if !slices.Equal(a, b) {
		t.Fatalf("assignment depends on the workers' order:\n%v\n%v", a, b)
	}
	if !slices.Equal(a, Assign(50, ws)) {
		t.Fatal("assignment is not a pure function")
	}
	for id, w := range a {
		if w == "" {
			t.Fatalf("client %d unassigned", id)
		}
	}
}

func TestAssignFollowsSlots(t *testing.T) {
	ws := []Member{{Name: "w1", Slots: 1}, {Name: "w2", Slots: 1}, {Name: "w3", Slots: 2}, {Name: "idle", Slots: 0}}
	count := map[string]int{}
	for _, w := range Assign(4000, ws) {
		count[w]++
	}
	if count["idle"] != 0 {
		t.Fatalf("a worker without slots got %d clients", count["idle"])
	}
	// Expected 1000, 1000, 2000; allow sampling noise.
	if c := count["w3"]; c < 1800 || c > 2200 {
		t.Fatalf("counts %v: the two-slot worker should get about half", count)
	}
	if c := count["w1"]; c < 850 || c > 1150 {
		t.Fatalf("counts %v: w1 should get about a quarter", count)
	}
}

// When a worker leaves, only its clients move; when it comes back, they
// return.
func TestAssignMovesOnlyTheLostWorkersClients(t *testing.T) {
	var ws []Member
	for i := range 5 {
		ws = append(ws, Member{Name: fmt.Sprintf("node-%d", i), Slots: 1 + i%2})
	}
	before := Assign(200, ws)
	after := Assign(200, slices.Delete(slices.Clone(ws), 2, 3))
	moved := 0
	for id := range before {
		if before[id] == "node-2" {
			if after[id] == "node-2" || after[id] == "" {
				t.Fatalf("client %d stays on the departed worker", id)
			}
			moved++
		} else if before[id] != after[id] {
			t.Fatalf("client %d moved from %s to %s though its worker stayed", id, before[id], after[id])
		}
	}
	if moved == 0 {
		t.Fatal("the departed worker had no client: the test proves nothing")
	}
	if !slices.Equal(before, Assign(200, ws)) {
		t.Fatal("rejoining did not restore the assignment")
	}
}

func TestAssignWithoutWorkers(t *testing.T) {
	for _, w := range Assign(3, nil) {
		if w != "" {
			t.Fatalf("assigned %q with no workers", w)
		}
	}
	if len(Assign(0, []Member{{Name: "a", Slots: 1}})) != 0 || len(Assign(-1, nil)) != 0 {
		t.Fatal("non-positive client counts must give an empty assignment")
	}
}
