package gateway

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// ProtoSubprotocol selects binary protobuf frames instead of protojson text.
const ProtoSubprotocol = "herald.v1.proto"

// maxFrameIDLen bounds ClientFrame.id.
const maxFrameIDLen = 64

var (
	jsonIn  = protojson.UnmarshalOptions{}
	jsonOut = protojson.MarshalOptions{}
	protoIn = proto.UnmarshalOptions{}
)

// errFrame is the kind of every client frame decoding error.
var errFrame = errors.New("gateway: bad frame")

// decodeClientFrame decodes one WebSocket message from a client: protojson
// text (either field-name form) or, when binary, protobuf. Unknown fields
// and frames without a kind are errors, so a client learns at once that it
// sent something this server does not understand.
func decodeClientFrame(data []byte, binary bool) (*heraldv1.ClientFrame, error) {
	f := &heraldv1.ClientFrame{}
	var err error
	if binary {
		err = protoIn.Unmarshal(data, f)
		if err == nil && hasUnknown(f.ProtoReflect()) {
			err = errors.New("unknown field")
		}
	} else {
		err = jsonIn.Unmarshal(data, f)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not a herald.v1.ClientFrame: %v", errFrame, err)
	}
	if len(f.GetId()) > maxFrameIDLen {
		return nil, fmt.Errorf("%w: id is %d bytes; the limit is %d", errFrame, len(f.GetId()), maxFrameIDLen)
	}
	if f.GetKind() == nil {
		return nil, fmt.Errorf("%w: frame has no type; set one of auth, subscribe, unsubscribe, post, typing or ping", errFrame)
	}
	return f, nil
}

// hasUnknown reports whether m or any message within it has unknown
// fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = hasUnknown(mv.Message())
					return !found
				})
			}
		case fd.Message() == nil:
		case fd.IsList():
			for i := 0; i < v.List().Len() && !found; i++ {
				found = hasUnknown(v.List().Get(i).Message())
			}
		default:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// encodeServerFrame encodes a frame for a connection.
func encodeServerFrame(f *heraldv1.ServerFrame, binary bool) ([]byte, error) {
	if binary {
		return proto.Marshal(f)
	}
	return jsonOut.Marshal(f)
}

// outEvent is one event as every subscriber receives it: encoded at most
// once per form, however many connections it goes to.
type outEvent struct {
	ev *heraldv1.Event

	jsonOnce, protoOnce sync.Once
	json, bin           []byte
	jsonErr, binErr     error
}

func newOutEvent(ev *heraldv1.Event) *outEvent { return &outEvent{ev: ev} }

func (o *outEvent) frame(binary bool) ([]byte, error) {
	if binary {
		o.protoOnce.Do(func() {
			o.bin, o.binErr = encodeServerFrame(eventFrame(o.ev), true)
		})
		return o.bin, o.binErr
	}
	o.jsonOnce.Do(func() {
		o.json, o.jsonErr = encodeServerFrame(eventFrame(o.ev), false)
	})
	return o.json, o.jsonErr
}

func eventFrame(ev *heraldv1.Event) *heraldv1.ServerFrame {
	return &heraldv1.ServerFrame{Kind: &heraldv1.ServerFrame_Event{Event: ev}}
}
