// A program written against containerd's Go client (Debian's
// golang-github-containerd-containerd-dev, 1.6), run against berthd by tests/tests/go_client.rs:
// import an image archive, unpack it, create a container from it, run a task, wait for its
// exit, read its events, delete everything. It prints one line per step and exits non-zero on
// the first failure.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
)

func must(err error, step string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", step, err)
		os.Exit(1)
	}
}

func main() {
	socket, archive := os.Args[1], os.Args[2]
	client, err := containerd.New(socket, containerd.WithTimeout(10*time.Second))
	must(err, "connect")
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), "go-client")

	v, err := client.Version(ctx)
	must(err, "version")
	fmt.Println("version", v.Version)

	f, err := os.Open(archive)
	must(err, "open archive")
	imgs, err := client.Import(ctx, f, containerd.WithIndexName("test.local/go:latest"))
	f.Close()
	must(err, "import")
	image, err := client.GetImage(ctx, imgs[0].Name)
	must(err, "get image")
	must(image.Unpack(ctx, "overlayfs"), "unpack")
	fmt.Println("imported", image.Name())

	events, errs := client.Subscribe(ctx, `topic~="/tasks/"`)

	container, err := client.NewContainer(ctx, "go1",
		containerd.WithImage(image),
		containerd.WithNewSnapshot("go1-snapshot", image),
		containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs("/bin/sh", "-c", "echo from-go; exit 4")),
	)
	must(err, "new container")
	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithStdio))
	must(err, "new task")
	exitCh, err := task.Wait(ctx)
	must(err, "wait")
	must(task.Start(ctx), "start")
	status := <-exitCh
	code, _, err := status.Result()
	must(err, "exit status")
	fmt.Println("exit", code)

	seen := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for !seen["/tasks/exit"] {
		select {
		case e := <-events:
			seen[e.Topic] = true
		case err := <-errs:
			must(err, "events")
		case <-deadline:
			must(fmt.Errorf("saw %v", seen), "no /tasks/exit event")
		}
	}
	fmt.Println("events", seen["/tasks/create"], seen["/tasks/start"], seen["/tasks/exit"])

	_, err = task.Delete(ctx)
	must(err, "delete task")
	must(container.Delete(ctx, containerd.WithSnapshotCleanup), "delete container")
	must(client.ImageService().Delete(ctx, image.Name()), "delete image")
	fmt.Println("done")
}
